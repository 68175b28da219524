"""A real Apache Kafka broker for the tests: one KRaft broker+controller on loopback.

Kafka's server jars come from Maven Central, fetched once with Maven (a small pom and
``mvn dependency:copy-dependencies``) into ``~/.cache/rtvi-kafka/<version>/libs``
(``RTVI_KAFKA_CACHE`` moves the cache). The broker runs straight from those jars with
the machine's Java 17+: the storage tool's main class formats a log dir, then
``kafka.Kafka server.properties`` starts it. The log dir lives in the test's tmp dir
and survives :meth:`KafkaBroker.kill` / :meth:`KafkaBroker.start`, so a restart keeps
every topic, record and committed offset, as a real deployment does.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from rtvi.net import free_port

KAFKA_VERSION = "4.4.0"
# slf4j-api 1.7 is what Kafka's jars log through; this binds it to the log4j2 Kafka ships.
_LOG_BINDING = ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.25.5")
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>rtvi.test</groupId><artifactId>kafka-broker-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version></dependency>
    <dependency><groupId>{0}</groupId><artifactId>{1}</artifactId><version>{2}</version></dependency>
  </dependencies>
</project>
"""
_LOG4J2 = """rootLogger.level = {level}
rootLogger.appenderRef.out.ref = OUT
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def kraft_settings(*, listeners: str, advertised: str, protocols: str, controller: str, log_dir: str) -> dict[str, str]:
    """One KRaft node as both broker and controller: every internal topic single-replica,
    fast failure detection, no automatic topics (tests create theirs). Used by the broker
    process here and by the broker image the Kubernetes node runs (support.node_images)."""
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{controller}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"{listeners},CONTROLLER://{controller}",
        "advertised.listeners": advertised,
        "listener.security.protocol.map": f"{protocols},CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": log_dir,
        # One node: every internal topic has a single replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # After a SIGKILL the controller keeps the dead broker's registration until this
        # times out (default 9 s); a restart waits for it.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "1000",
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
    }


def properties_text(settings: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def log4j2_text(level: str = "INFO") -> str:
    return _LOG4J2.format(level=level)


JVM_OPTIONS = ("-XX:+UseG1GC", "-Djava.awt.headless=true")


class KafkaUnavailable(RuntimeError):
    """Java or Maven is missing, or the jars cannot be fetched."""


def missing_tools() -> str | None:
    """Why the real broker cannot run here, in one line, or None if it can."""
    if shutil.which("java") is None:
        return "java not found: the real Kafka broker needs Java 17+ (and Maven for the first jar fetch)"
    if not (jar_dir().is_dir() or shutil.which("mvn")):
        return "mvn not found and no cached Kafka jars: the real Kafka broker needs Maven once"
    return None


def cache_root() -> Path:
    return Path(os.environ.get("RTVI_KAFKA_CACHE", Path.home() / ".cache" / "rtvi-kafka"))


def jar_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_root() / version / "libs"


def fetch_jars(version: str = KAFKA_VERSION) -> Path:
    """Kafka's server jars, from the cache or (once, under a file lock) from Maven Central."""
    target = jar_dir(version)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be fetching the same jars
        if target.is_dir():
            return target
        if shutil.which("mvn") is None:
            raise KafkaUnavailable(missing_tools() or "mvn not found")
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            pom = Path(work) / "pom.xml"
            pom.write_text(_POM.format(*_LOG_BINDING, version=version))
            staging = Path(work) / "libs"
            result = subprocess.run(
                ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                 f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
                capture_output=True, text=True, timeout=900,
            )
            if result.returncode != 0:
                raise KafkaUnavailable(f"mvn could not fetch Kafka {version}: {(result.stdout + result.stderr)[-2000:]}")
            staging.rename(target)  # atomic: a half-fetched cache is never seen
    return target


@dataclass(frozen=True)
class Listener:
    """One client listener. ``advertised_port`` differs from ``port`` when a proxy sits in
    front of it: Kafka clients reconnect to the address the broker advertises, so the
    broker must name the proxy for every later connection to go through it too."""

    name: str
    protocol: str = "PLAINTEXT"
    port: int = field(default_factory=free_port)
    advertised_port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.advertised_port or self.port}"


class KafkaBroker:
    """``with KafkaBroker(tmp_path) as broker: broker.bootstrap_servers``.

    The first listener, ``PLAINTEXT``, is the inter-broker one and the default bootstrap
    address; ``listeners`` adds more (a proxied one, SASL_SSL, ...) and ``properties``
    adds or overrides server settings (security, ``message.max.bytes``).
    """

    def __init__(
        self, workdir: Path, *, listeners: tuple[Listener, ...] = (), properties: dict[str, str] | None = None,
        scram_users: dict[str, str] | None = None, heap_mb: int = 512,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.workdir / "kafka-data"
        self.log_path = self.workdir / "kafka.log"
        self.plaintext = Listener("PLAINTEXT")
        self.listeners = (self.plaintext, *listeners)
        self.controller_port = free_port()
        self.properties = properties or {}
        self.scram_users = scram_users or {}
        self.heap_mb = heap_mb
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._formatted = False

    @property
    def bootstrap_servers(self) -> str:
        return self.plaintext.address

    def listener(self, name: str) -> Listener:
        return next(item for item in self.listeners if item.name == name)

    def _server_properties(self) -> Path:
        protocols = ",".join(f"{item.name}:{item.protocol}" for item in self.listeners)
        settings = kraft_settings(
            listeners=",".join(f"{item.name}://127.0.0.1:{item.port}" for item in self.listeners),
            advertised=",".join(f"{item.name}://{item.address}" for item in self.listeners),
            protocols=protocols, controller=f"127.0.0.1:{self.controller_port}", log_dir=str(self.log_dir),
        )
        path = self.workdir / "server.properties"
        path.write_text(properties_text({**settings, **self.properties}))
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        log4j = self.workdir / "log4j2.properties"
        if not log4j.exists():
            log4j.write_text(log4j2_text())
        return ["java", f"-Xmx{self.heap_mb}m", f"-Xms{min(self.heap_mb, 256)}m", *JVM_OPTIONS,
                f"-Dlog4j2.configurationFile={log4j}",
                "-cp", f"{fetch_jars()}/*", main, *args]

    def _format(self, config: Path) -> None:
        args = ["format", "-t", uuid.uuid4().hex[:22], "-c", str(config), "--ignore-formatted"]
        for mechanism_user, password in self.scram_users.items():
            mechanism, user = mechanism_user.split(":", 1)
            args += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        result = subprocess.run(self._java("kafka.tools.StorageTool", *args), capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise KafkaUnavailable(f"kafka storage format failed: {(result.stdout + result.stderr)[-2000:]}")
        self._formatted = True

    def start(self, timeout: float = 120.0) -> KafkaBroker:
        """Start (or restart on the same log dir) and wait until a client can create a topic."""
        started = time.monotonic()
        config = self._server_properties()
        if not self._formatted:
            self._format(config)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self._java("kafka.Kafka", str(config)), stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(started + timeout)
        except BaseException:
            self.kill()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, deadline: float) -> None:
        from confluent_kafka.admin import AdminClient

        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise KafkaUnavailable(f"kafka exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.plaintext.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.1)
                continue
            admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.plaintext.port}", "log_level": 0})
            try:
                if admin.list_topics(timeout=5).brokers:
                    return
            except Exception:  # KafkaException while the broker finishes starting
                time.sleep(0.2)
        raise KafkaUnavailable(f"kafka not ready on {self.bootstrap_servers}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, the log dir is recovered at the next start."""
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(30)

    def stop(self, timeout: float = 60.0) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
