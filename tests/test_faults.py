"""Faults under load against a real Apache Kafka broker: nothing lost, duplicates counted.

Every test runs a paced `rtvi produce` (2 streams) into a real broker, a real `rtvi
consume` and a real `rtvi serve`, injects one kind of fault, and ends with the same
checks: every produced frame has at least one prediction or error record (0 lost), the
duplicates are counted and printed, and the consumer caught up with the producer (back
to full throughput) within RECOVERY_S of the fault ending. Each test prints one
``RELIABILITY`` line with its figures (the README's reliability table).

Network faults go through tests/support/tcp_proxy.py. Kafka clients connect to the
addresses the broker *advertises*, not to the bootstrap address they were given, so the
broker has a second listener, ``PROXIED``, that advertises the proxy's port: a client
bootstrapping there keeps all its connections (fetch, produce, group coordinator)
behind the proxy, while the producer and the test's readers use the direct listener.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from rtvi.net import free_port
from rtvi.streaming.probe import PodMetrics

from conftest import (
    ConsumerProc, InferenceServer, Proc, end_offsets, kafka_broker, make_topics, rtvi_command, start_consumer,
)
from test_streaming_pipeline import inference  # noqa: F401  (fixture: one server per module)

FPS_PER_STREAM = 10
STREAMS = 2
RECOVERY_S = 60  # stated bound: caught up within a minute of the fault ending (loaded 2-core machine)
BROKER_MESSAGE_MAX_BYTES = 1_048_576


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    from support.kafka_broker import Listener
    from support.tcp_proxy import TcpProxy

    proxy_port = free_port()  # the port the PROXIED listener advertises and the proxy listens on
    broker = kafka_broker(
        tmp_path_factory.mktemp("kafka-faults"),
        listeners=(Listener("PROXIED", advertised_port=proxy_port),),
        properties={"message.max.bytes": str(BROKER_MESSAGE_MAX_BYTES)},
    )
    with broker:
        with TcpProxy(broker.listener("PROXIED").port, port=proxy_port) as proxy:
            broker.proxy = proxy
            yield broker


@pytest.fixture
def topics(kafka, request):
    return make_topics(kafka, request.node.name)


class Predictions:
    """Reads the predictions topic incrementally (direct listener): records per frame."""

    def __init__(self, broker, topic: str) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.seen: Counter = Counter()
        self.errors = 0
        self._reader = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "rtvi-fault-reader",
                                 "enable.auto.commit": False, "log_level": 0})
        self._reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(2)])

    def update(self) -> int:
        import json

        for msg in self._reader.consume(num_messages=1000, timeout=0.2):
            if msg.error() is None:
                record = json.loads(msg.value())
                self.seen[(record["stream"], record["frame"])] += 1
                self.errors += "error" in record
        return len(self.seen)

    def close(self) -> None:
        self._reader.close()


def produced_frames(broker, topic: str) -> set[tuple[str, int]]:
    """(stream, frame) of every frame in the topic, from the records' headers."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from rtvi.streaming.frames import FrameInfo

    reader = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "rtvi-fault-frames",
                       "enable.auto.commit": False, "log_level": 0})
    ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(2)}
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(2)])
    frames, positions = set(), dict.fromkeys(ends, 0)
    deadline = time.monotonic() + 60
    try:
        while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for msg in reader.consume(num_messages=1000, timeout=0.2):
                if msg.error() is None:
                    info = FrameInfo.from_record(msg.headers(), msg.key())
                    frames.add((info.stream, info.frame))
                    positions[msg.partition()] = msg.offset() + 1
    finally:
        reader.close()
    assert positions == ends, "could not read back every produced frame"
    return frames


class Run:
    """One fault scenario: paced producer, consumer(s), and the checks every test ends with."""

    def __init__(self, tmp_path: Path, kafka, topics: dict, inference_address: str, *, via_proxy: bool = False,
                 consumer_args: tuple[str, ...] = ()) -> None:
        self.tmp_path, self.kafka, self.topics = tmp_path, kafka, topics
        self.inference_address = inference_address
        self.consumer_bootstrap = SimpleNamespace(
            bootstrap_servers=kafka.proxy.address if via_proxy else kafka.bootstrap_servers)
        self.consumer_args = consumer_args
        self.producer = Proc(
            rtvi_command("produce", "--bootstrap-servers", kafka.bootstrap_servers, "--topic", topics["frames"],
                         "--streams", str(STREAMS), "--fps", str(FPS_PER_STREAM), "--synthetic-size", "320x240",
                         "--report-interval", "0"),
            tmp_path / "produce.log",
        )
        self.consumers = [self.start_consumer()]
        self.predictions = Predictions(kafka, topics["predictions"])
        self.recoveries: list[float] = []
        self.final: PodMetrics | None = None  # the last consumer's metrics just before it stopped

    def start_consumer(self) -> ConsumerProc:
        return start_consumer(self.tmp_path, self.consumer_bootstrap, self.topics, self.inference_address,
                              "--batch-size", "4", "--max-in-flight", "4", *self.consumer_args)

    @property
    def consumer(self) -> ConsumerProc:
        return self.consumers[-1]

    def wait_predictions(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.predictions.update() < count:
            assert time.monotonic() < deadline, f"fewer than {count} predictions:\n{self.consumer.output}"
            assert self.consumer.popen.poll() is None, f"consumer exited:\n{self.consumer.output}"

    def recovered(self, fault_ended: float) -> float:
        """Seconds from ``fault_ended`` until every frame produced by then has a record."""
        target = sum(end_offsets(self.kafka, self.topics["frames"]).values())
        self.wait_predictions(target, timeout=RECOVERY_S + 60)
        seconds = time.monotonic() - fault_ended
        self.recoveries.append(seconds)
        return seconds

    def under_load(self, seconds: float) -> None:
        """Let the pipeline run (and the fault act) for ``seconds``, reading predictions."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.predictions.update()

    def finish(self, fault: str) -> None:
        """Stop producing, let the consumer drain, and check nothing was lost."""
        self.producer.popen.send_signal(signal.SIGTERM)
        assert self.producer.popen.wait(120) == 0, self.producer.output
        assert " 0 delivery errors" in self.producer.output, self.producer.output
        frames = produced_frames(self.kafka, self.topics["frames"])
        deadline = time.monotonic() + 120
        while len(frames - set(self.predictions.seen)) and time.monotonic() < deadline:
            self.predictions.update()
        self.final = self.consumer.figures()
        for consumer in self.consumers:
            consumer.terminate()
        self.predictions.update()
        lost = frames - set(self.predictions.seen)
        records = sum(self.predictions.seen[f] for f in frames)
        duplicates = records - len(frames)
        recovery = max(self.recoveries, default=0.0)
        print(f"\nRELIABILITY | {fault} | frames {len(frames)} | lost {len(lost)} | duplicates {duplicates} "
              f"| error records {self.predictions.errors} | recovery {recovery:.1f}s")
        assert not lost, f"{len(lost)} frames without a record, e.g. {sorted(lost)[:5]}\n{self.consumer.output}"
        assert recovery < RECOVERY_S, f"caught up only after {recovery:.1f}s"
        assert self.predictions.errors == 0, "a fault turned into error records instead of retries"

    def close(self) -> None:
        self.producer.kill()
        for consumer in self.consumers:
            consumer.kill()
        self.predictions.close()


@pytest.fixture
def run_factory(tmp_path, kafka, topics):
    runs: list[Run] = []

    def make(inference_address: str, **options) -> Run:
        runs.append(Run(tmp_path, kafka, topics, inference_address, **options))
        return runs[-1]

    yield make
    for run in runs:
        run.close()


def test_network_faults_between_consumer_and_broker(run_factory, kafka, inference):  # noqa: F811
    proxy = kafka.proxy
    run = run_factory(inference.address, via_proxy=True)
    run.wait_predictions(40)
    assert proxy.reset() > 0  # every connection (fetch, produce, coordinator) cut with RST
    run.recovered(time.monotonic())
    for name, value, seconds in (("latency_s", 0.5, 8), ("bytes_per_s", 100_000, 8), ("blackhole", True, 10)):
        setattr(proxy, name, value)
        run.under_load(seconds)  # a 10 s blackhole outlasts the 6 s session: the group evicts the consumer
        proxy.clear()
        run.recovered(time.monotonic())
    run.finish("consumer-broker: RST, +500 ms, 100 kB/s, 10 s blackhole")


def test_network_faults_between_consumer_and_server(run_factory, inference):  # noqa: F811
    from support.tcp_proxy import TcpProxy

    with TcpProxy(inference.port) as proxy:
        run = run_factory(proxy.address, consumer_args=("--request-timeout-s", "5"))
        run.wait_predictions(40)
        assert proxy.reset() > 0
        run.recovered(time.monotonic())
        for name, value, seconds in (("latency_s", 0.5, 8), ("bytes_per_s", 100_000, 8), ("blackhole", True, 10)):
            setattr(proxy, name, value)
            run.under_load(seconds)
            proxy.clear()
            run.recovered(time.monotonic())
        run.finish("consumer-server: RST, +500 ms, 100 kB/s, 10 s blackhole")
    assert run.final.retries > 0, run.final  # the reset and the blackhole's deadlines were retried, not failed


def test_consumer_sigkilled_mid_rebalance(run_factory, inference):  # noqa: F811
    run = run_factory(inference.address)
    first = run.consumer
    run.wait_predictions(40)
    run.consumers.append(run.start_consumer())  # the second member's join starts a rebalance
    # Cooperative rebalance, first phase under way: the first member gave a partition up.
    first.wait_figures(lambda m: any(not owned for owned in m.partitions.values()), 60)
    first.popen.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    run.recovered(killed)
    run.finish("consumer SIGKILL mid-rebalance (2 in a group)")
    assert run.final.owned_partitions == {0, 1}, run.final  # the survivor took both partitions


def test_inference_server_sigkilled_and_restarted(run_factory, tmp_path):
    server = InferenceServer(tmp_path, "--max-batch-size", "16")
    restarted = None
    try:
        server.wait_serving()
        run = run_factory(server.address)
        run.wait_predictions(40)
        server.proc.popen.send_signal(signal.SIGKILL)
        server.proc.kill()
        run.under_load(3)
        restarted = InferenceServer(tmp_path, "--max-batch-size", "16", port=server.port)
        restarted.wait_serving()
        run.recovered(time.monotonic())
        run.finish("inference server SIGKILL + restart")
    finally:
        server.proc.kill()
        if restarted:
            restarted.proc.terminate()
    assert run.final.retries_by_code.get("UNAVAILABLE", 0) > 0, run.final


def test_broker_sigkilled_and_restarted_on_its_log_dir(run_factory, kafka, inference):  # noqa: F811
    run = run_factory(inference.address)
    run.wait_predictions(40)
    kafka.kill()
    run.under_load(3)
    kafka.start()
    restarted = time.monotonic()
    print(f"\nbroker restarted on its log dir in {kafka.start_seconds:.1f}s")
    run.recovered(restarted)
    run.finish("broker SIGKILL + restart on the same log dir")


def test_frame_over_the_broker_limit_is_refused_and_nothing_after_it_is_lost(tmp_path, kafka, topics, inference):  # noqa: F811
    import cv2
    import numpy as np

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        size = (1400, 1400) if i == 5 else (240, 320)  # noise at quality 95: 2.3 MB as JPEG
        cv2.imwrite(str(folder / f"{i:02d}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    producer = Proc(rtvi_command("produce", "--bootstrap-servers", kafka.bootstrap_servers, "--topic", topics["frames"],
                                 "--source", "images", "--images", str(folder), "--fps", "0", "--jpeg-quality", "95",
                                 "--report-interval", "0"), tmp_path / "produce.log")
    assert producer.popen.wait(120) == 1, producer.output
    log = producer.output
    print(log)
    assert "11 delivered, 1 delivery errors" in log
    assert "frame 5 of stream-0" in log and "message.max.bytes" in log
    frames = produced_frames(kafka, topics["frames"])
    assert frames == {("stream-0", i) for i in range(12) if i != 5}
    consumer = start_consumer(tmp_path, kafka, topics, inference.address, "--max-frames", "11")
    try:
        assert consumer.popen.wait(120) == 0, consumer.output
    finally:
        consumer.kill()
    predictions = Predictions(kafka, topics["predictions"])
    deadline = time.monotonic() + 30
    while predictions.update() < 11 and time.monotonic() < deadline:
        pass
    predictions.close()
    assert set(predictions.seen) == frames
    print(f"\nRELIABILITY | frame over message.max.bytes | frames 11 | lost 0 | duplicates "
          f"{sum(predictions.seen.values()) - 11} | refused 1 | recovery 0s")
