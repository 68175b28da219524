"""`rtvi up`'s live view in a real browser (Debian's Chromium, headless): `rtvi up` on a real Apache
Kafka broker starts `rtvi serve` (random weights), `rtvi consume`, `rtvi produce` and `rtvi view` as
processes. What the page shows is checked against the records read from the broker.

The pipeline is one module fixture, ``live_view``, yielding the view's URL, the broker and the
topic names. Tests that need streams of their own produce them straight to the broker.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, Proc, committed_offsets, end_offsets, free_port, read_records, rtvi_command
from rtvi.local.pipeline import FRAMES, PREDICTIONS
from rtvi.view.config import ViewConfig
from test_streaming_pipeline import wait_for

# Written by every run, at a stable path (docs/view.png in the README is one of these).
SCREENSHOTS = REPO / "build" / "screenshots"
STALE_AFTER_S = ViewConfig.stale_after_s  # rtvi up runs the view with its defaults
VIEW_GROUP = ViewConfig.group


@dataclass
class LiveView:
    url: str
    broker: Any  # .bootstrap_servers
    topics: dict[str, str]  # frames, predictions
    live_streams: tuple[str, ...]  # streams the pipeline keeps producing


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def photo_folder(target: Path) -> Path:
    from support.photos import SKIMAGE_DATA

    target.mkdir()
    for name in ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"):
        shutil.copy(SKIMAGE_DATA / name, target / name)
    return target


@pytest.fixture(scope="module")
def live_view(broker, tmp_path_factory) -> Iterator[LiveView]:
    """`rtvi up` with its view on the test's broker, streams flowing: its two synthetic cameras and a
    stream of photos produced beside it."""
    tmp = tmp_path_factory.mktemp("view")
    port = free_port()
    # Keep-all (--max-frame-age-ms 0): every frame the tests produce gets its record, however loaded
    # the machine, so what the page shows can be compared with the broker frame by frame.
    up = Proc(rtvi_command("up", "--bootstrap-servers", broker.bootstrap_servers, "--duration", "900",
                           "--streams", "2", "--fps", "4", "--view-port", str(port), "--report-interval", "60",
                           "--max-frame-age-ms", "0", "--work-dir", str(tmp / "up")), tmp / "up.log")
    url = f"http://127.0.0.1:{port}"
    topics = {"frames": FRAMES, "predictions": PREDICTIONS}
    photos = None
    try:
        wait_for(lambda: up.popen.poll() is not None or http_get(f"{url}/readyz")[0] == 200, 300, "the view", up)
        assert up.popen.poll() is None, up.output
        photos = Proc(rtvi_command("produce", "--bootstrap-servers", broker.bootstrap_servers, "--topic", FRAMES,
                                   "--report-interval", "0", "--source", "images", "--loop", "--stream-prefix",
                                   "photo", "--images", str(photo_folder(tmp / "photos")), "--fps", "2"),
                      tmp / "produce-photos.log")
        yield LiveView(url, broker, topics, live_streams=("stream-0", "stream-1", "photo-0"))
        assert up.popen.poll() is None, f"rtvi up stopped:\n{up.output}"
    finally:
        if photos:
            photos.terminate()
        code = up.terminate(timeout=120)
    # The corrupt stream's failed frames make rtvi up's verdict "failed" (exit 1); nothing crashed.
    assert code in (0, 1) and "Traceback" not in up.output, up.output
    assert "Traceback" not in (tmp / "up" / "view.log").read_text()


@pytest.fixture(scope="module")
def browser():
    from support.browser import chromium, missing

    reason = missing()
    if reason:
        pytest.skip(reason)
    with chromium(width=1400, height=1160) as driver:
        yield driver


# --- what the page and the broker say --------------------------------------------------------------

TILES_JS = """
return [...document.querySelectorAll('.tile')].map(tile => ({
  stream: tile.dataset.stream, state: tile.dataset.state, frame: tile.dataset.frame ?? null,
  label: tile.querySelector('.labels li.top1 .label')?.textContent ?? null,
  mark: tile.querySelector('.mark').textContent, error: tile.querySelector('.error').textContent,
}));
"""


def tiles(browser) -> dict[str, dict]:
    return {tile["stream"]: tile for tile in browser.execute_script(TILES_JS)}


def open_grid(browser, view: LiveView) -> None:
    if browser.current_url.rstrip("/") != view.url:
        browser.get(view.url)


def read_all(view: LiveView, topic: str) -> list[tuple[int, int, bytes, bytes]]:
    """(partition, offset, key, value) of every record on ``topic`` now (up to its end offsets)."""
    ends = end_offsets(view.broker, topic)
    return read_records(view.broker, topic, until=sum(ends.values()), timeout=30)


def predictions(view: LiveView) -> list[dict]:
    return [json.loads(value) for _, _, _, value in read_all(view, view.topics["predictions"])]


def latest_predictions(view: LiveView) -> dict[str, dict]:
    """Each stream's latest prediction record on the broker (a stream's records share one
    partition, in order)."""
    return {record["stream"]: record for record in predictions(view)}


def frame_streams(view: LiveView) -> set[str]:
    return {key.decode() for _, _, key, _ in read_all(view, view.topics["frames"])}


def produce_burst(view: LiveView, tmp_path: Path, prefix: str, frames: int = 6) -> None:
    """Two streams of ``frames`` frames each that then stop."""
    proc = Proc(rtvi_command("produce", "--bootstrap-servers", view.broker.bootstrap_servers, "--topic",
                             view.topics["frames"], "--streams", "2", "--stream-prefix", prefix, "--max-frames",
                             str(frames), "--fps", "6", "--synthetic-size", "320x240", "--report-interval", "0"),
                tmp_path / f"produce-{prefix}.log")
    try:
        assert proc.popen.wait(60) == 0, proc.output
    finally:
        proc.kill()


def produce_corrupt(view: LiveView, stream: str, count: int) -> None:
    """Frames that are not images, with the wire format's headers, straight to the frames topic."""
    from confluent_kafka import Producer

    from rtvi.streaming.frames import FrameInfo

    producer = Producer({"bootstrap.servers": view.broker.bootstrap_servers})
    for index in range(count):
        producer.produce(view.topics["frames"], value=b"\xff\xd8 not a jpeg #%d" % index, key=stream.encode(),
                         headers=FrameInfo(stream, index, time.time_ns(), width=320, height=240).headers())
    assert producer.flush(30) == 0


# --- the tests ---------------------------------------------------------------------------------------

def test_one_tile_per_stream_labelled_with_its_latest_prediction(live_view, browser, tmp_path):
    produce_burst(live_view, tmp_path, "still")
    open_grid(browser, live_view)
    final = wait_for(lambda: (lambda last: last if all(
        last.get(f"still-{i}", {}).get("frame") == 5 for i in range(2)) else None)(latest_predictions(live_view)),
        60, "the burst's last predictions")
    wait_for(lambda: all(tiles(browser).get(f"still-{i}", {}).get("frame") == "5" for i in range(2)), 30,
             "the burst's last frames on the page")
    wait_for(lambda: set(tiles(browser)) == frame_streams(live_view), 30, "one tile per stream of the frames topic")
    latest = latest_predictions(live_view)
    page = tiles(browser)
    records = predictions(live_view)
    for stream, tile in page.items():
        if stream.startswith("still-"):  # stopped: the page shows exactly the broker's latest record
            assert tile["label"] == final[stream]["top"][0]["label"], (stream, tile, final[stream]["top"][0])
        elif stream in live_view.live_streams:  # moving: the label of the frame shown, one of the newest
            shown = next(r for r in records if r["stream"] == stream and str(r["frame"]) == tile["frame"])
            assert tile["label"] == shown["top"][0]["label"], (stream, tile, shown)
            # Read from the broker before the page was: the page may lag it by an update or two.
            assert shown["frame"] >= latest[stream]["frame"] - 4, (stream, shown["frame"], latest[stream]["frame"])

    # The API says the same, and the image is the frame's bytes as produced: not re-encoded.
    status, body = http_get(f"{live_view.url}/api/streams")
    api = {s["stream"]: s for s in json.loads(body)}
    assert status == 200 and set(api) == set(page)
    for i in range(2):
        stream, record = f"still-{i}", final[f"still-{i}"]
        assert (api[stream]["label"], api[stream]["score"], api[stream]["frame"]) == (
            record["top"][0]["label"], record["top"][0]["score"], 5)
        assert {"fps", "p50_ms", "p95_ms", "dropped", "failed", "stale"} <= set(api[stream])
        status, image = http_get(f"{live_view.url}/api/streams/{stream}/latest.jpg")
        produced = next(value for partition, offset, _, value in read_all(live_view, live_view.topics["frames"])
                        if (partition, offset) == (record["partition"], record["offset"]))
        assert status == 200 and image == produced
    for stream in live_view.live_streams:
        assert api[stream]["fps"] > 0 and 0 < api[stream]["p50_ms"] <= api[stream]["p95_ms"], api[stream]


def test_a_stream_that_stops_is_marked_stale(live_view, browser, tmp_path):
    produce_burst(live_view, tmp_path, "quiet", frames=3)
    open_grid(browser, live_view)
    wait_for(lambda: tiles(browser).get("quiet-0", {}).get("frame") == "2", 60, "the quiet stream's last frame")
    tile = wait_for(lambda: (lambda t: t if t["state"] == "stale" else None)(tiles(browser)["quiet-0"]),
                    STALE_AFTER_S + 10, "the stale mark")
    assert tile["mark"].startswith("STALE: no prediction for"), tile
    assert all(tiles(browser)[stream]["state"] == "live" for stream in live_view.live_streams)


def test_the_tiles_images_update(live_view, browser):
    open_grid(browser, live_view)
    wait_for(lambda: all(tiles(browser).get(s, {}).get("frame") for s in live_view.live_streams), 60,
             "live tiles with images")

    def pictures() -> dict[str, bytes]:
        return {s: browser.find_element("css selector", f'.tile[data-stream="{s}"] .picture').screenshot_as_png
                for s in live_view.live_streams}

    before, frames_before = pictures(), tiles(browser)
    time.sleep(3)
    after, frames_after = pictures(), tiles(browser)
    for stream in live_view.live_streams:
        assert int(frames_after[stream]["frame"]) > int(frames_before[stream]["frame"]), stream
        assert after[stream] != before[stream], f"{stream}: the same picture 3 s apart"


def test_a_stream_whose_frames_fail_shows_its_error(live_view, browser):
    produce_corrupt(live_view, "broken-0", 4)
    open_grid(browser, live_view)
    record = wait_for(lambda: (lambda r: r if r and r["frame"] == 3 else None)(
        latest_predictions(live_view).get("broken-0")), 60, "the error records of the corrupt frames")
    assert "INVALID_ARGUMENT" in record["error"]
    tile = wait_for(lambda: (lambda t: t if t and t["error"].endswith(record["error"]) else None)(
        tiles(browser).get("broken-0")), 30, "the error on the page")
    assert tile["state"] == "failed" and tile["mark"] == "FAILED"
    assert tile["error"] == f"error (frame 3): {record['error']}"
    status, body = http_get(f"{live_view.url}/api/streams/broken-0")
    summary = json.loads(body)
    assert status == 200 and summary["failing"] and summary["failed"] == 4 and summary["error"] == record["error"]


def test_the_stream_page_charts_its_latency(live_view, browser):
    stream = live_view.live_streams[0]
    browser.get(f"{live_view.url}/streams/{stream}")
    try:
        wait_for(lambda: browser.execute_script("return document.querySelector('.tile')?.dataset.frame"), 30,
                 "the stream page's tile")
        status, body = http_get(f"{live_view.url}/api/streams/{stream}")
        history = json.loads(body)["history"]
        assert status == 200 and history and all(p50 <= p95 for _, p50, p95 in history)
        drawn = browser.execute_script(
            "const c = document.getElementById('chart');"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 2] < 120) n++; return n;")
        assert drawn > 20, "no p95 line (orange) on the chart"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / "view-stream.png"))
    finally:
        browser.get(live_view.url)


def test_screenshot_of_the_grid(live_view, browser):
    open_grid(browser, live_view)
    wait_for(lambda: all(tiles(browser).get(s, {}).get("frame") for s in live_view.live_streams), 60, "live tiles")
    time.sleep(0.5)  # the images just set are drawn
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / "view.png"
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000
    print(f"\nscreenshot of the grid: {path}")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_records_that_are_not_predictions_are_counted_and_skipped(live_view):
    from confluent_kafka import Producer

    from conftest import metric_sum

    producer = Producer({"bootstrap.servers": live_view.broker.bootstrap_servers})
    for value in (b"not json", b"[1, 2]", json.dumps({"stream": "x", "partition": "zero", "offset": 1}).encode(),
                  b"\xff" * 1000):
        producer.produce(live_view.topics["predictions"], value=value, key=b"hostile")
    assert producer.flush(30) == 0

    def invalid() -> float:
        return metric_sum(http_get(f"{live_view.url}/metrics")[1].decode(), "rtvi_view_records_total",
                          topic="predictions", outcome="invalid")

    wait_for(lambda: invalid() >= 4, 30, "the records counted as invalid")
    status, body = http_get(f"{live_view.url}/api/streams")
    assert status == 200 and "hostile" not in {s["stream"] for s in json.loads(body)}


def upgrade_status(url: str, **headers: str) -> int:
    """The HTTP status of a WebSocket handshake to /api/live (101: accepted)."""
    import http.client
    from urllib.parse import urlsplit

    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=5)
    try:
        connection.request("GET", "/api/live", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", **headers})
        return connection.getresponse().status
    finally:
        connection.close()


def test_other_sites_cannot_read_the_view(live_view):
    """Bound to loopback, the view answers only to loopback names (no DNS rebinding), and its
    WebSocket only to its own page (browsers let any site open one to any address)."""
    import http.client
    from urllib.parse import urlsplit

    netloc = urlsplit(live_view.url).netloc
    assert upgrade_status(live_view.url, Origin=live_view.url) == 101
    assert upgrade_status(live_view.url, Origin="https://attacker.example") == 403
    for host, expected in ((netloc, 200), (f"localhost:{netloc.rsplit(':', 1)[1]}", 200), ("attacker.example", 400)):
        connection = http.client.HTTPConnection(netloc, timeout=5)
        connection.request("GET", "/api/streams", headers={"Host": host})
        assert connection.getresponse().status == expected, host
        connection.close()


def test_the_view_commits_nothing_and_answers_health_checks(live_view):
    assert http_get(f"{live_view.url}/livez")[0] == 200 and http_get(f"{live_view.url}/readyz")[0] == 200
    for topic in (live_view.topics["frames"], live_view.topics["predictions"]):
        assert committed_offsets(live_view.broker, VIEW_GROUP, topic) == {}
