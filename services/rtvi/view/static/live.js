// The live connection and the tile of one stream, shared by the grid and the stream page.
// Text from the broker (stream ids, labels, errors) is only ever set as textContent.

const decoder = new TextDecoder();

// One update: a 4-byte big-endian header length, the JSON header, the image bytes as sent.
export function unpack(buffer) {
  const length = new DataView(buffer).getUint32(0);
  const header = JSON.parse(decoder.decode(new Uint8Array(buffer, 4, length)));
  const image = buffer.byteLength > 4 + length ? new Uint8Array(buffer, 4 + length) : null;
  return { header, image };
}

// Connect to /api/live (reconnecting with a pause when the server goes away).
export function connect(query, onUpdate) {
  const status = document.getElementById("connection");
  const open = () => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/api/live${query}`);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => { status.dataset.state = "open"; status.textContent = "live"; };
    socket.onmessage = (event) => onUpdate(unpack(event.data));
    socket.onclose = () => {
      status.dataset.state = "closed";
      status.textContent = "disconnected, retrying";
      setTimeout(open, 1000);
    };
  };
  open();
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Scores are what the model outputs: probabilities (shown as percent) or logits (shown as they are).
const isProbability = (top) => top.every((item) => item.score >= 0 && item.score <= 1);
const percent = (fraction) => `${(fraction * 100).toFixed(1)}%`;
const ms = (value) => (value === null ? "–" : `${Math.round(value)} ms`);

export class Tile {
  constructor(stream, { link = true } = {}) {
    this.stream = stream;
    this.imageUrl = null;
    this.hasImage = false;
    this.root = element("article", "tile");
    this.root.dataset.stream = stream;
    this.root.dataset.state = "waiting";

    const title = element("h2", "title");
    const name = link ? element("a", "name", stream) : element("span", "name", stream);
    if (link) name.href = `/streams/${encodeURIComponent(stream)}`;
    this.badge = element("span", "badge", "waiting");
    title.append(name, this.badge);

    const picture = this.picture = element("div", "picture");
    this.img = element("img");
    this.img.alt = `latest classified frame of ${stream}`;
    this.labels = element("ol", "labels");
    this.mark = element("div", "mark");
    this.frameNo = element("span", "frame-number");
    picture.append(this.img, this.labels, this.mark, this.frameNo);

    this.figures = element("dl", "figures");
    this.values = {};
    for (const [key, label] of [["fps", "fps"], ["p50", "p50"], ["p95", "p95"], ["dropped", "dropped"], ["failed", "failed"]]) {
      const cell = element("div", `figure ${key}`);
      this.values[key] = element("dd", "", "–");
      cell.append(element("dt", "", label), this.values[key]);
      this.figures.append(cell);
    }
    this.error = element("p", "error");
    this.root.append(title, picture, this.figures, this.error);
  }

  drawLabels(top) {
    const probabilities = isProbability(top);
    const best = top.length ? top[0].score : 1;
    this.labels.replaceChildren(...top.map((item, rank) => {
      const row = element("li", rank === 0 ? "top1" : "");
      const bar = element("span", "bar");
      const fraction = probabilities ? item.score : best > 0 ? item.score / best : 0;
      bar.style.width = percent(Math.max(0, Math.min(1, fraction)));
      const score = probabilities ? percent(item.score) : item.score.toFixed(2);
      row.append(bar, element("span", "label", item.label), element("span", "score", score));
      return row;
    }));
  }

  update({ header, image }) {
    if (image !== null && header.image) {
      const url = URL.createObjectURL(new Blob([image], { type: header.image.type }));
      const previous = this.imageUrl;
      this.img.onload = () => { if (previous) URL.revokeObjectURL(previous); };
      this.img.src = url;
      this.imageUrl = url;
      this.hasImage = true;
      this.picture.classList.add("has-image");
      this.root.dataset.frame = String(header.image.frame);
      this.frameNo.textContent = `frame ${header.image.frame}`;
      this.drawLabels(header.image.top);
    } else if (!this.hasImage && header.top.length) {
      this.drawLabels(header.top);  // predictions whose frames the view did not read
    }
    const state = header.failing ? "failed" : header.stale ? "stale" : header.processed ? "live" : "waiting";
    this.root.dataset.state = state;
    this.root.dataset.stale = String(header.stale);
    this.badge.textContent = state;
    const since = header.seconds_since_prediction;
    this.mark.textContent = header.failing ? "FAILED"
      : header.stale ? (since === null ? "STALE: no prediction yet" : `STALE: no prediction for ${Math.round(since)} s`)
      : "";
    this.values.fps.textContent = header.fps.toFixed(1);
    this.values.p50.textContent = ms(header.p50_ms);
    this.values.p95.textContent = ms(header.p95_ms);
    this.values.dropped.textContent = String(header.dropped);
    this.values.failed.textContent = String(header.failed);
    this.error.textContent = header.error === null ? ""
      : `${header.failing ? "error" : "last error"} (frame ${header.error_frame}): ${header.error}`;
    this.error.dataset.current = String(header.failing);
  }
}
