// The grid: one tile per stream, in stream order.
import { Tile, connect } from "./live.js";

const grid = document.getElementById("grid");
const tiles = new Map();

function tileFor(stream) {
  let tile = tiles.get(stream);
  if (!tile) {
    tile = new Tile(stream);
    tiles.set(stream, tile);
    const after = [...tiles.keys()].sort().find((other) => other > stream);
    grid.insertBefore(tile.root, after ? tiles.get(after).root : null);
    document.getElementById("empty").hidden = true;
    document.getElementById("summary").textContent = `${tiles.size} stream${tiles.size === 1 ? "" : "s"}`;
  }
  return tile;
}

connect("", (update) => tileFor(update.header.stream).update(update));
