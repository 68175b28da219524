"""The pipeline end to end: a real Apache Kafka broker, real `rtvi serve`, `rtvi produce` and `rtvi consume`
processes; one smoke test runs the same clean pipeline on Tansu, the embedded broker of `rtvi up`."""

from __future__ import annotations

import signal
import time
import urllib.request
from collections import Counter, defaultdict

import pytest

from conftest import (
    InferenceServer, committed_offsets, end_offsets, make_topics, metric_sum, produce_frames, read_predictions,
    start_consumer,
)


@pytest.fixture(scope="module")
def inference(tmp_path_factory):
    srv = InferenceServer(tmp_path_factory.mktemp("serve"), "--max-batch-size", "16")
    try:
        srv.wait_serving()
        yield srv
    finally:
        srv.proc.terminate()


def wait_for(predicate, timeout: float, what: str, proc=None, interval: float = 0.2):
    """Poll ``predicate`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{proc.output}" if proc else ""))


def assert_complete(predictions: list[dict], streams: int, frames: int) -> Counter:
    """Every (stream, frame) has a prediction; returns how often each was predicted."""
    seen = Counter((p["stream"], p["frame"]) for p in predictions)
    expected = {(f"stream-{s}", f) for s in range(streams) for f in range(frames)}
    missing = expected - set(seen)
    assert not missing, f"{len(missing)} frames without prediction, e.g. {sorted(missing)[:5]}"
    assert set(seen) == expected
    return seen


def run_clean_pipeline(tmp_path, broker, topics, inference, streams: int, frames: int) -> None:
    """Produce, consume to the end, and check one prediction per frame, in order, all committed."""
    total = streams * frames
    produce_frames(tmp_path, broker, topics["frames"], frames, streams)
    consumer = start_consumer(tmp_path, broker, topics, inference.address)
    try:
        figures = consumer.wait_figures(lambda m: m.done >= total)
        assert consumer.terminate() == 0, consumer.output
    finally:
        consumer.kill()
    predictions = read_predictions(broker, topics["predictions"], total)
    seen = assert_complete(predictions, streams, frames)
    assert set(seen.values()) == {1}, "duplicates in a clean run"
    by_stream = defaultdict(list)
    for p in predictions:
        assert "error" not in p and len(p["top"]) == 5 and p["model"] == "resnet18"
        assert p["latency_ms"]["capture_to_prediction"] > 0
        by_stream[p["stream"]].append(p["frame"])
    for stream, order in by_stream.items():
        assert order == sorted(order), f"{stream} predictions out of order"
    assert (figures.processed, figures.failed, figures.dropped) == (total, 0, 0)


def test_every_frame_gets_exactly_one_prediction_in_order(tmp_path, broker, topics, inference):
    run_clean_pipeline(tmp_path, broker, topics, inference, streams=2, frames=60)
    assert committed_offsets(broker, topics["group"], topics["frames"]) == end_offsets(broker, topics["frames"])


def test_tansu_smoke(tmp_path, tansu_broker, request, inference):
    """`rtvi up`'s embedded broker still carries the whole pipeline (its watermarks are
    wrong, so committed offsets are not compared with them here)."""
    run_clean_pipeline(tmp_path, tansu_broker, make_topics(tansu_broker, request.node.name), inference,
                       streams=2, frames=20)


def test_consumer_killed_and_restarted_loses_nothing(tmp_path, broker, topics, inference):
    streams, frames = 2, 150
    produce_frames(tmp_path, broker, topics["frames"], frames, streams)
    first = start_consumer(tmp_path, broker, topics, inference.address, "--batch-size", "4")
    try:
        wait_for(lambda: len(read_predictions(broker, topics["predictions"], 40, timeout=1)) >= 40, 90,
                 "first predictions", first)
    finally:
        first.popen.send_signal(signal.SIGKILL)
        first.kill()
    done_before_kill = len(read_predictions(broker, topics["predictions"], 10_000, timeout=2))
    assert done_before_kill < streams * frames, "the consumer finished before it could be killed"
    second = start_consumer(tmp_path, broker, topics, inference.address)
    try:
        wait_for(lambda: committed_offsets(broker, topics["group"], topics["frames"])
                 == end_offsets(broker, topics["frames"]), 120, "all offsets committed", second)
    finally:
        second.terminate()
    predictions = read_predictions(broker, topics["predictions"], streams * frames * 2, timeout=5)
    seen = assert_complete(predictions, streams, frames)
    duplicates = sum(n - 1 for n in seen.values())
    print(f"{done_before_kill} predictions before SIGKILL, {duplicates} duplicates after restart")


def test_inference_server_outage_is_retried_not_failed(tmp_path, broker, topics):
    streams, frames = 2, 80
    server = InferenceServer(tmp_path)
    server.wait_serving()
    produce_frames(tmp_path, broker, topics["frames"], frames, streams, fps=20)
    consumer = start_consumer(tmp_path, broker, topics, server.address, "--batch-size", "2", "--max-in-flight", "1")
    try:
        wait_for(lambda: len(read_predictions(broker, topics["predictions"], 20, timeout=1)) >= 20, 90,
                 "first predictions", consumer)
        assert server.proc.terminate() == 0
        time.sleep(4)  # the server is down: the consumer must retry, not fail frames
        # Back on the same port: the consumer's channel reconnects to it.
        restarted = InferenceServer(tmp_path, port=server.port)
        restarted.wait_serving()
        try:
            figures = consumer.wait_figures(lambda m: m.done >= streams * frames)
        finally:
            restarted.proc.terminate()
        assert consumer.terminate() == 0, consumer.output
    finally:
        consumer.kill()
        server.proc.terminate()
    assert_complete(read_predictions(broker, topics["predictions"], streams * frames), streams, frames)
    assert figures.failed == 0 and figures.retries_by_code.get("UNAVAILABLE", 0) > 0, figures
    assert "retrying" in consumer.output  # and the operator is told so



def test_corrupt_frame_becomes_one_error_record(tmp_path, broker, topics, inference):
    from confluent_kafka import Producer

    from conftest import jpeg_bytes
    from rtvi.streaming.frames import FrameInfo

    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for i in range(21):
        value = b"\xff\xd8 this is not a jpeg" if i == 10 else jpeg_bytes(320, 240, seed=i)
        producer.produce(topics["frames"], value=value, key=b"cam",
                         headers=FrameInfo("cam", i, time.time_ns()).headers())
    assert producer.flush(30) == 0
    # dns:/// with round_robin, as the chart configures it for a headless Service.
    consumer = start_consumer(tmp_path, broker, topics, f"dns:///localhost:{inference.port}", "--batch-size", "8")
    try:
        wait_for(lambda: len(read_predictions(broker, topics["predictions"], 21, timeout=1)) >= 21, 90,
                 "21 records", consumer)
        with urllib.request.urlopen(f"{consumer.url}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        assert consumer.terminate() == 0
    predictions = read_predictions(broker, topics["predictions"], 21)
    errors = [p for p in predictions if "error" in p]
    assert [(e["stream"], e["frame"]) for e in errors] == [("cam", 10)]
    assert "INVALID_ARGUMENT" in errors[0]["error"] and "image 0 of 1" in errors[0]["error"]
    assert sorted(p["frame"] for p in predictions if "top" in p) == [i for i in range(21) if i != 10]
    assert metric_sum(text, "rtvi_consumer_frames_failed_total") == 1
    assert metric_sum(text, "rtvi_consumer_frames_processed_total") == 20


def test_sigterm_finishes_and_commits_in_flight_work(tmp_path, broker, topics, inference):
    streams, frames = 2, 150
    produce_frames(tmp_path, broker, topics["frames"], frames, streams)
    consumer = start_consumer(tmp_path, broker, topics, inference.address, "--batch-size", "8", "--max-in-flight", "4")
    try:
        wait_for(lambda: len(read_predictions(broker, topics["predictions"], 30, timeout=1)) >= 30, 90,
                 "first predictions", consumer)
        consumer.popen.send_signal(signal.SIGTERM)
        assert consumer.popen.wait(60) == 0, consumer.output
    finally:
        consumer.kill()
    assert "stopping: finishing" in consumer.output
    predictions = read_predictions(broker, topics["predictions"], streams * frames, timeout=3)
    assert 30 <= len(predictions) < streams * frames, "SIGTERM should land mid-run"
    published_ends: dict[int, int] = {}
    for p in predictions:
        published_ends[p["partition"]] = max(published_ends.get(p["partition"], 0), p["offset"] + 1)
    # Everything published was committed, and nothing was committed without a prediction.
    assert committed_offsets(broker, topics["group"], topics["frames"]) == published_ends
    assert len({(p["stream"], p["frame"]) for p in predictions}) == len(predictions)


def test_stale_frames_are_dropped_and_counted(tmp_path, broker, topics, inference):
    produce_frames(tmp_path, broker, topics["frames"], 10, 2)
    time.sleep(1.0)
    consumer = start_consumer(tmp_path, broker, topics, inference.address, "--max-frame-age-ms", "500")
    try:
        figures = consumer.wait_figures(lambda m: m.done >= 20, 90)
        assert consumer.terminate() == 0, consumer.output
    finally:
        consumer.kill()
    assert figures.dropped_by_reason == {"stale": 20} and figures.processed == 0
    assert committed_offsets(broker, topics["group"], topics["frames"]) == end_offsets(broker, topics["frames"])
    assert read_predictions(broker, topics["predictions"], 1, timeout=2) == []
