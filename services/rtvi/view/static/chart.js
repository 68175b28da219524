// A latency chart on a canvas: p50 and p95 per second of prediction time, the last `span` seconds.

const COLORS = { p50: "#4ea1ff", p95: "#ff9f43", grid: "#2c3340", text: "#9aa4b2" };

function niceStep(max) {
  const raw = max / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw);
}

export class LatencyChart {
  constructor(canvas, span = 300) {
    this.canvas = canvas;
    this.span = span;
    this.points = new Map();  // second -> [p50, p95]
    this.pending = false;
  }

  // Points are [second, p50, p95]; a point of a second already drawn replaces it (that second was still filling).
  add(points) {
    for (const [second, p50, p95] of points) this.points.set(second, [p50, p95]);
    const newest = Math.max(...this.points.keys());
    for (const second of this.points.keys()) if (second <= newest - this.span) this.points.delete(second);
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    const ctx = canvas.getContext("2d");
    ctx.scale(ratio, ratio);
    ctx.clearRect(0, 0, width, height);
    const left = 64, right = 12, top = 12, bottom = 28;
    const seconds = [...this.points.keys()].sort((a, b) => a - b);
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillStyle = COLORS.text;
    if (!seconds.length) {
      ctx.fillText("no predictions yet", left, top + 20);
      return;
    }
    const newest = seconds[seconds.length - 1];
    const oldest = newest - this.span;
    const max = Math.max(1, ...seconds.map((s) => this.points.get(s)[1]));
    const step = niceStep(max * 1.1);
    const yMax = Math.ceil((max * 1.1) / step) * step;
    const x = (second) => left + ((second - oldest) / this.span) * (width - left - right);
    const y = (value) => top + (1 - value / yMax) * (height - top - bottom);

    ctx.strokeStyle = COLORS.grid;
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let value = 0; value <= yMax; value += step) {
      ctx.beginPath(); ctx.moveTo(left, y(value)); ctx.lineTo(width - right, y(value)); ctx.stroke();
      ctx.fillText(`${value} ms`, left - 6, y(value));
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const tick = this.span > 120 ? 60 : 15;
    for (let ago = 0; ago <= this.span; ago += tick) {
      const label = ago === 0 ? "now" : ago % 60 === 0 ? `-${ago / 60} min` : `-${ago} s`;
      ctx.fillText(label, x(newest - ago), height - bottom + 8);
    }

    for (const [index, key] of [[1, "p95"], [0, "p50"]]) {
      ctx.strokeStyle = COLORS[key];
      ctx.lineWidth = 2;
      ctx.beginPath();
      let previous = null;
      for (const second of seconds) {
        const value = this.points.get(second)[index];
        if (previous === null || second - previous > 2) ctx.moveTo(x(second), y(value));  // a gap: no line across it
        else ctx.lineTo(x(second), y(value));
        previous = second;
      }
      ctx.stroke();
    }
  }
}
