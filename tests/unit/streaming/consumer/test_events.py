"""Label-change events from a stream's predictions, and their place in the consumer's unit of work."""

from __future__ import annotations

import asyncio
import json

from rtvi.streaming.consumer.events import LABEL_CHANGED, STREAM_RESUMED, STREAM_SILENT, LabelEvents
from tests.unit.streaming.consumer.fakes import FakeClassifier, FakeKafkaConsumer, FakeProducer, config, consumer


def feed(events: LabelEvents, labels: list[str], scores: list[float] | None = None, stream: str = "cam") -> list[dict]:
    out = []
    for frame, label in enumerate(labels):
        score = 1.0 if scores is None else scores[frame]
        out += events.observe(stream, frame, 1000 + frame, label, score, now_ns=frame * 10**8)
    return out


def test_a_label_makes_an_event_once_it_held_for_min_frames():
    got = feed(LabelEvents(min_frames=3), ["cat"] * 4 + ["dog"] * 2 + ["cat"] + ["dog"] * 3)
    assert [(e["previous"], e["label"], e["first_frame"], e["last_frame"]) for e in got] == [
        (None, "cat", 0, 2), ("cat", "dog", 7, 9)], "the 2-frame run of dog made none"
    assert all(e["type"] == LABEL_CHANGED and e["frames"] == 3 for e in got)
    assert got[1]["first_capture_ns"] == 1007 and got[1]["last_capture_ns"] == 1009


def test_low_scores_count_for_no_label():
    got = feed(LabelEvents(min_frames=2, min_score=0.5), ["cat", "cat", "dog", "dog", "dog"],
               scores=[0.9, 0.9, 0.9, 0.1, 0.9])
    assert [(e["previous"], e["label"]) for e in got] == [(None, "cat")], "the run of dog was broken by a 0.1"


def test_a_silent_stream_and_its_return():
    events = LabelEvents(min_frames=1, silence_s=2.0)
    events.observe("cam", 0, 1000, "cat", 1.0, now_ns=0)
    assert events.silences(now_ns=int(1.9e9)) == []
    silent = events.silences(now_ns=int(2.0e9))
    assert [(e["type"], e["last_frame"]) for e in silent] == [(STREAM_SILENT, 0)]
    assert events.silences(now_ns=int(5e9)) == [], "said once"
    back = events.observe("cam", 1, 2000, "cat", 1.0, now_ns=int(6e9))
    assert [(e["type"], e["silent_s"]) for e in back] == [(STREAM_RESUMED, 6.0)]


def test_events_are_published_with_their_frames_prediction_and_committed_with_it():
    kafka, producer = FakeKafkaConsumer(partitions=1), FakeProducer()
    for frame, label in enumerate(["cat"] * 3 + ["dog"] * 3):
        kafka.add(0, "cam", frame, value=f"label:{label}".encode())
    cfg = config(events_topic="events", max_frames=6)
    c = consumer(cfg, kafka, producer, FakeClassifier())
    asyncio.run(c.run())
    events = [json.loads(v) for v in producer.topics["events"]]
    assert [(e["previous"], e["label"], e["last_frame"]) for e in events] == [(None, "cat", 2), ("cat", "dog", 5)]
    assert events[0]["model"] == cfg.model
    assert kafka.committed == {0: 6}


def test_a_frame_is_committed_only_once_its_event_is_acknowledged_too():
    kafka, producer = FakeKafkaConsumer(partitions=1), FakeProducer(held={"events"})
    for frame in range(3):
        kafka.add(0, "cam", frame, value=b"label:cat")
    c = consumer(config(events_topic="events", event_min_frames=2), kafka, producer, FakeClassifier())

    async def scenario():
        task = asyncio.create_task(c.run())
        while len(producer.records) < 3:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # several commit intervals
        # Frame 0 made no event and is committed; frame 1's event is not acknowledged: so
        # neither frame 1 nor frame 2 (after it) is committed, though their predictions are.
        assert kafka.committed == {0: 1}
        producer.held.clear()
        while kafka.committed != {0: 3}:
            await asyncio.sleep(0.001)
        c.stopping = True
        await task

    asyncio.run(scenario())
    assert [json.loads(v)["last_frame"] for v in producer.topics["events"]] == [1]
