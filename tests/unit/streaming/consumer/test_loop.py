"""The consumer's loop in-process, built from fakes: order and commits, revoke mid-batch, pause and
resume, drain on SIGTERM, retry with backoff, bisecting a bad frame, re-publishing, shedding.

Each runs in milliseconds; tests/test_streaming_pipeline.py and test_faults.py prove the same
paths with a real broker and server.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from rtvi.protocol.errors import InferenceError
from rtvi.streaming.consumer import loop, report
from rtvi.streaming.consumer import metrics as names
from rtvi.streaming.probe import from_samples, sample_sum
from tests.unit.streaming.consumer.fakes import (
    FakeClassifier, FakeKafkaConsumer, FakeProducer, config, consumer, until,
)


def records(producer: FakeProducer) -> list[dict]:
    return [json.loads(value) for _, value in producer.records]


def figures(frame_consumer):
    return from_samples("test", report.snapshot(frame_consumer.outcomes.metrics))


def fill(kafka: FakeKafkaConsumer, frames: int, streams: int = 2, **options) -> None:
    """``frames`` frames per stream; stream s on partition s % partitions."""
    for frame in range(frames):
        for s in range(streams):
            kafka.add(s % kafka.partitions, f"cam-{s}", frame, **options)


def test_every_frame_gets_one_record_in_order_and_is_committed_after_its_ack():
    kafka, producer, client = FakeKafkaConsumer(), FakeProducer(), FakeClassifier(delay=0.002)
    fill(kafka, 10)
    c = consumer(config(max_frames=20), kafka, producer, client)
    asyncio.run(c.run())
    got = records(producer)
    assert sorted((r["stream"], r["frame"]) for r in got) == sorted((f"cam-{s}", f) for s in range(2) for f in range(10))
    for stream in ("cam-0", "cam-1"):
        assert [r["frame"] for r in got if r["stream"] == stream] == list(range(10))
    assert kafka.committed == {0: 10, 1: 10}
    assert figures(c).processed == 20 and figures(c).failed == 0
    assert kafka.closed and client.closed
    window = sample_sum(report.snapshot(c.outcomes.metrics), names.WINDOW)
    assert window == c.policy.batch_size * c.policy.calls, "the dispatch's window is on /metrics"


def test_revoked_mid_batch_its_frames_are_left_to_the_next_owner():
    kafka, producer = FakeKafkaConsumer(), FakeProducer()
    client = FakeClassifier(gate=asyncio.Event())
    fill(kafka, 4)

    async def scenario():
        c = consumer(config(batch_size=2, max_in_flight=4), kafka, producer, client)
        task = asyncio.create_task(c.run())
        await until(lambda: len(client.calls) >= 2)  # batches of both partitions are in flight
        kafka.rebalance(revoke=[0])
        await until(lambda: 0 not in c.partitions)
        client.gate.set()
        await until(lambda: kafka.committed.get(1) == 4)
        c.stopping = True
        await task
        return c

    c = asyncio.run(scenario())
    assert {r["partition"] for r in records(producer)} == {1}, "a revoked partition's results are not published"
    assert 0 not in kafka.committed, "nothing of the revoked partition is committed by its old owner"
    samples = c.outcomes.metrics.registry.collect()
    flat = [s for family in samples for s in family.samples]
    assert sample_sum(flat, names.ASSIGNED, partition="0") == 0 and sample_sum(flat, names.ASSIGNED, partition="1") == 1


def test_a_full_pipeline_pauses_its_partitions_and_resumes_when_it_drains(monkeypatch):
    monkeypatch.setattr(loop, "PAUSE_AFTER_S", 0.05)
    kafka, producer = FakeKafkaConsumer(), FakeProducer()
    client = FakeClassifier(gate=asyncio.Event())  # the server does not answer
    fill(kafka, 25)

    async def scenario():
        c = consumer(config(batch_size=2, max_in_flight=1, max_frames=50), kafka, producer, client)
        task = asyncio.create_task(c.run())
        await until(lambda: kafka.paused == {0, 1})
        assert c._buffered() == c.policy.hold_limit  # keep-all: it read no more than it may hold
        client.gate.set()
        await until(lambda: not kafka.paused)
        await task
        return c

    c = asyncio.run(scenario())
    assert len(records(producer)) == 50 and kafka.committed == {0: 25, 1: 25}
    assert figures(c).processed == 50


def test_sigterm_finishes_publishes_and_commits_what_was_read():
    kafka, producer, client = FakeKafkaConsumer(), FakeProducer(), FakeClassifier(delay=0.01)
    fill(kafka, 40)

    async def scenario():
        c = consumer(config(batch_size=4, max_in_flight=2), kafka, producer, client)
        task = asyncio.create_task(c.run())
        await until(lambda: len(producer.records) >= 8)
        c.stopping = True  # what the SIGTERM handler does
        await task
        return c

    asyncio.run(scenario())
    got = records(producer)
    read = {p: kafka.positions[p] for p in (0, 1)}
    assert 8 <= len(got) < 80, "SIGTERM landed mid-run"
    assert len(got) == sum(read.values()), "every frame read has its record"
    assert kafka.committed == read, "and everything published is committed"
    assert kafka.closed and client.closed


def test_retryable_errors_are_retried_with_backoff_never_failed():
    kafka, producer = FakeKafkaConsumer(), FakeProducer()
    client = FakeClassifier(errors=[InferenceError("UNAVAILABLE", "connection refused"),
                                    InferenceError("UNAVAILABLE", "connection refused"),
                                    InferenceError("DEADLINE_EXCEEDED", "deadline")])
    fill(kafka, 4)
    c = consumer(config(batch_size=8, max_in_flight=1, max_frames=8), kafka, producer, client)
    asyncio.run(c.run())
    got = records(producer)
    assert len(got) == 8 and not any("error" in r for r in got)
    m = figures(c)
    assert m.failed == 0 and m.retries_by_code == {"UNAVAILABLE": 2, "DEADLINE_EXCEEDED": 1}
    assert c.health.inference_reachable


def test_a_bad_frame_is_bisected_out_of_its_batch():
    kafka, producer, client = FakeKafkaConsumer(partitions=1), FakeProducer(), FakeClassifier()
    for frame in range(8):
        kafka.add(0, "cam", frame, value=b"bad" if frame == 2 else b"jpeg")
    c = consumer(config(batch_size=4, max_in_flight=1, max_frames=8), kafka, producer, client)
    asyncio.run(c.run())
    got = records(producer)
    assert [r["frame"] for r in got] == list(range(8)), "records stay in frame order"
    errors = [r for r in got if "error" in r]
    assert [e["frame"] for e in errors] == [2] and "INVALID_ARGUMENT" in errors[0]["error"]
    assert client.calls[:5] == [4, 1, 1, 1, 1], "the failing batch is split into single frames"
    assert sample_sum(report.snapshot(c.outcomes.metrics), names.FAILED, reason="invalid_argument") == 1
    assert kafka.committed == {0: 8}


def test_an_undelivered_prediction_is_produced_again_before_its_offset_is_committed():
    kafka, producer, client = FakeKafkaConsumer(partitions=1), FakeProducer(fail_next=3), FakeClassifier()
    fill(kafka, 6, streams=1)
    c = consumer(config(max_frames=6), kafka, producer, client)
    asyncio.run(c.run())
    # A record produced again lands after later ones: after a failed delivery the guarantee is
    # at-least-once, not order (librdkafka's idempotent producer fails the later ones too).
    assert sorted(r["frame"] for r in records(producer)) == list(range(6))
    assert sample_sum(report.snapshot(c.outcomes.metrics), names.PUBLISH_RETRIES) == 3
    assert kafka.committed == {0: 6}


def test_real_time_drops_stale_frames_commits_them_and_predicts_none():
    kafka, producer, client = FakeKafkaConsumer(), FakeProducer(), FakeClassifier()
    fill(kafka, 5, age_ms=1000)
    c = consumer(config(max_frame_age_ms=300, max_frames=10), kafka, producer, client)
    asyncio.run(c.run())
    assert producer.records == [] and client.calls == []
    assert kafka.committed == {0: 5, 1: 5}
    samples = report.snapshot(c.outcomes.metrics)
    assert sample_sum(samples, names.DROPPED, reason="stale") == 10
    block = report.render(samples, 1.0, 300)
    assert "stale on read: 10" in block and "DROPPED (real time: frames older than 300 ms" in block


def test_the_log_block_is_rendered_from_the_metrics():
    kafka, producer, client = FakeKafkaConsumer(), FakeProducer(), FakeClassifier()
    fill(kafka, 3)
    c = consumer(config(max_frames=6), kafka, producer, client)
    asyncio.run(c.run())
    block = report.render(report.snapshot(c.outcomes.metrics), 2.0, 0)
    assert "frames processed: 6" in block and "ERRORS\n  total: 0" in block
    assert "  cam-0: 3 / 0 / 0" in block and "keep-all mode" in block


@pytest.mark.parametrize("empty", [b""])
def test_an_empty_frame_gets_an_error_record(empty):
    kafka, producer, client = FakeKafkaConsumer(partitions=1), FakeProducer(), FakeClassifier()
    kafka.add(0, "cam", 0, value=empty)
    kafka.add(0, "cam", 1)
    c = consumer(config(max_frames=2), kafka, producer, client)
    asyncio.run(c.run())
    got = records(producer)
    assert "empty frame" in got[0]["error"] and got[1]["top"][0]["label"] == "cat"
