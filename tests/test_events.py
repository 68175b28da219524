"""Label-change events with real weights: EfficientNet-Lite0 served by `rtvi serve`, a real broker,
and an image-folder stream that alternates two photos of different classes every two seconds.
The events must come exactly at the changes, none in between, then `stream_silent` once the
stream stops."""

from __future__ import annotations

import json
import shutil

from conftest import InferenceServer, Proc, read_predictions, read_records, rtvi_command, start_consumer
from rtvi.streaming.kafka_config import KafkaConfig, ensure_topics
from support.photos import SKIMAGE_DATA

PHOTOS = ("coffee.png", "chelsea.png")  # espresso, a cat: far apart
FRAMES_PER_PHOTO, CHANGES, FPS = 4, 4, 2


def test_label_change_events_come_exactly_at_the_changes(tmp_path, broker, topics, lite0_onnx):
    folder = tmp_path / "alternating"
    folder.mkdir()
    for frame in range(FRAMES_PER_PHOTO * CHANGES):
        shutil.copy(SKIMAGE_DATA / PHOTOS[frame // FRAMES_PER_PHOTO % 2], folder / f"{frame:03d}.png")
    frames = FRAMES_PER_PHOTO * CHANGES
    events_topic = f"events-{topics['frames']}"
    ensure_topics(KafkaConfig(bootstrap_servers=broker.bootstrap_servers), {events_topic: 1})
    server = InferenceServer(tmp_path, "--model", str(lite0_onnx), "--model-name", "lite0", "--instances", "1")
    consumer = None
    try:
        server.wait_serving(timeout=300)
        consumer = start_consumer(tmp_path, broker, topics, server.address, "--model", "lite0",
                                  "--events-topic", events_topic, "--event-min-frames", "3",
                                  "--event-silence-s", "3")
        consumer.wait_figures(lambda m: m.owned_partitions == {0, 1}, 60)
        producer = Proc(rtvi_command("produce", "--bootstrap-servers", broker.bootstrap_servers,
                                     "--topic", topics["frames"], "--source", "images", "--images", str(folder),
                                     "--fps", str(FPS), "--stream-prefix", "door", "--report-interval", "0"),
                        tmp_path / "produce.log")
        assert producer.popen.wait(60) == 0, producer.output
        consumer.wait_figures(lambda m: m.done >= frames, 60)
        predictions = read_predictions(broker, topics["predictions"], frames)
        records = read_records(broker, events_topic, CHANGES + 1, timeout=30)  # the changes, then the silence
    finally:
        if consumer:
            assert consumer.terminate() == 0, consumer.output
        server.proc.terminate()

    top1 = {p["frame"]: p["top"][0]["label"] for p in predictions}
    labels = [top1[f * FRAMES_PER_PHOTO] for f in range(CHANGES)]
    assert labels[0] == "espresso" and labels[1] in {"tabby", "tiger cat", "Egyptian cat"}, labels
    assert all(top1[f] == labels[f // FRAMES_PER_PHOTO] for f in range(frames)), top1  # each photo: one label
    events = [json.loads(value) for _, _, _, value in records]
    assert all(key == b"door-0" for _, _, key, _ in records)
    changes = [e for e in events if e["type"] == "label_changed"]
    assert [(e["previous"], e["label"], e["first_frame"], e["last_frame"]) for e in changes] == [
        (labels[i - 1] if i else None, labels[i], i * FRAMES_PER_PHOTO, i * FRAMES_PER_PHOTO + 2)
        for i in range(CHANGES)
    ], changes
    silent = [e for e in events if e["type"] == "stream_silent"]
    assert [(e["stream"], e["last_frame"]) for e in silent] == [("door-0", frames - 1)]
    assert len(events) == CHANGES + 1, "no event in between"
