// One stream: a larger tile and its latency chart.
import { Tile, connect } from "./live.js";
import { LatencyChart } from "./chart.js";

const stream = decodeURIComponent(location.pathname.slice("/streams/".length));
document.title = `rtvi view: ${stream}`;
document.getElementById("stream-name").textContent = stream;
const tile = new Tile(stream, { link: false });
tile.root.classList.add("large");
document.getElementById("tile-slot").append(tile.root);
const chart = new LatencyChart(document.getElementById("chart"));

async function loadHistory() {
  const response = await fetch(`/api/streams/${encodeURIComponent(stream)}`);
  if (!response.ok) return;
  const body = await response.json();
  chart.span = body.history_s;
  document.getElementById("chart-span").textContent = body.history_s >= 120 ? `${body.history_s / 60} minutes` : `${body.history_s} s`;
  chart.add(body.history);
}

loadHistory().finally(() => connect(`?stream=${encodeURIComponent(stream)}`, (update) => {
  tile.update(update);
  chart.add(update.header.history || []);
}));
