"""One typed Kafka connection config that renders librdkafka settings for every client.

The producer, the consumer and the admin client all start from the same settings, so
security, client ids and size limits cannot drift apart. The frame size limit is the
single source for the producer's own check, librdkafka's ``message.max.bytes`` and
the consumer's fetch sizes.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rtvi.deadline import Deadline
from rtvi.errors import BadInput, Unreachable
from rtvi.settings import require, setting

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Room for headers, key and record overhead on top of the frame itself.
RECORD_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = setting("localhost:9092", "Kafka/Redpanda bootstrap servers, host:port[,host:port]")
    security_protocol: str = setting("PLAINTEXT", "security.protocol", choices=SECURITY_PROTOCOLS)
    sasl_mechanism: str = setting("", "SASL mechanism when security protocol is SASL_*", choices=SASL_MECHANISMS)
    sasl_username: str = setting("", "SASL username")
    sasl_password: str = setting("", "SASL password (prefer the environment variable, e.g. from a Secret)", secret=True)
    ssl_ca_location: str = setting("", "CA certificate file for SSL/SASL_SSL")
    client_id: str = setting("", "client.id; empty means rtvi-<role>-<hostname>")
    max_frame_bytes: int = setting(
        4 * 1024 * 1024,
        "largest encoded frame; the producer rejects bigger frames with a clear error and "
        "the Kafka clients are sized to carry it",
    )

    def __post_init__(self) -> None:
        require(bool(self.bootstrap_servers.strip()), "bootstrap servers must not be empty")
        require(self.max_frame_bytes >= 1024, "max frame bytes must be >= 1024")
        if self.security_protocol.startswith("SASL"):
            require(bool(self.sasl_mechanism), f"security protocol {self.security_protocol} needs --sasl-mechanism")
            require(bool(self.sasl_username), f"security protocol {self.security_protocol} needs --sasl-username")

    @property
    def max_record_bytes(self) -> int:
        return self.max_frame_bytes + RECORD_OVERHEAD_BYTES

    def common(self, role: str) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id or f"rtvi-{role}-{socket.gethostname()}",
            "security.protocol": self.security_protocol,
            # librdkafka's own stderr lines repeat on every reconnect; errors reach the
            # log once each through error_logger() instead.
            "log_level": 2,
        }
        if self.sasl_mechanism:
            settings.update(
                {"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.sasl_username,
                 "sasl.password": self.sasl_password}
            )
        if self.ssl_ca_location:
            settings["ssl.ca.location"] = self.ssl_ca_location
        return settings

    def producer(self, role: str, **overrides: Any) -> dict[str, Any]:
        """Idempotent, acks=all: no duplicates or reordering from producer retries."""
        return {
            **self.common(role),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.max.bytes": self.max_record_bytes,
            **overrides,
        }

    def consumer(self, role: str, group_id: str, **overrides: Any) -> dict[str, Any]:
        """Manual offset storage and commits: an offset is committed only after its result is safe."""
        return {
            **self.common(role),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "fetch.max.bytes": max(52_428_800, self.max_record_bytes),
            "max.partition.fetch.bytes": max(1_048_576, self.max_record_bytes),
            "fetch.wait.max.ms": 50,
            **overrides,
        }

    def admin(self) -> dict[str, Any]:
        return self.common("admin")


class KafkaSecurityError(BadInput):
    """The broker refused the credentials or the certificate: retrying cannot help, so
    the service stops with this one line instead of retrying forever."""


def security_error(err) -> KafkaSecurityError | None:
    """The error to stop with when ``err`` (a KafkaError) is an authentication or TLS failure."""
    from confluent_kafka import KafkaError

    if err.code() == KafkaError._AUTHENTICATION:
        return KafkaSecurityError(
            f"kafka authentication failed; check --sasl-mechanism, --sasl-username and --sasl-password "
            f"(RTVI_SASL_*): {err.str()}"
        )
    if err.code() == KafkaError._SSL:
        return KafkaSecurityError(f"kafka TLS failed; check --ssl-ca-location (RTVI_SSL_CA_LOCATION): {err.str()}")
    return None


def error_logger(log: logging.Logger) -> Callable:
    """An ``error_cb`` that logs each distinct client error once (librdkafka repeats them
    on every reconnect attempt), so an unreachable broker is said clearly, not endlessly.

    An authentication or TLS failure raises KafkaSecurityError instead: confluent-kafka
    re-raises it from the poll/consume/flush call that served the callback, which ends
    the service with one line and a non-zero exit rather than a silent retry loop.
    """
    seen: set[str] = set()

    def on_error(err) -> None:
        fatal = security_error(err)
        if fatal is not None:
            raise fatal
        if err.str() not in seen:
            seen.add(err.str())
            log.warning("kafka: %s", err.str())

    return on_error


def _cluster_metadata(config: KafkaConfig, timeout: float):
    """An AdminClient and the cluster's metadata, asked in short tries so that refused
    credentials or an untrusted certificate end it at once (KafkaSecurityError) rather
    than after ``timeout``; KafkaException if no broker answered in time."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list = []
    admin = AdminClient({**config.admin(), "error_cb": errors.append})
    deadline = Deadline.from_timeout(timeout)
    while True:
        try:
            return admin, admin.list_topics(timeout=min(1.0, max(0.1, deadline.remaining)))
        except KafkaException:
            admin.poll(0)  # serves error_cb
            fatal = next(filter(None, map(security_error, errors)), None)
            if fatal is not None:
                raise fatal from None
            if deadline.expired:
                raise


def ensure_topics(config: KafkaConfig, topics: dict[str, int], timeout: float = 15.0) -> None:
    """Create missing topics with the given partition counts (local mode and tests;
    in Kubernetes the chart's Topic resources own them)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    admin, metadata = _cluster_metadata(config, timeout)
    wanted = [NewTopic(name, num_partitions=parts, replication_factor=1) for name, parts in topics.items()
              if name not in metadata.topics]
    for future in admin.create_topics(wanted, operation_timeout=timeout).values() if wanted else ():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


class BrokerUnreachable(Unreachable):
    """No broker answered at the bootstrap servers."""


def check_broker(config: KafkaConfig, timeout: float) -> None:
    """Fail fast when no broker answers, instead of retrying quietly for minutes: one
    ``BrokerUnreachable``, not a line per retry; refused credentials or certificate are
    a KafkaSecurityError, which says so, not "no broker answered"."""
    from confluent_kafka import KafkaException

    try:
        _cluster_metadata(config, timeout)
    except KafkaException as exc:
        raise BrokerUnreachable(
            f"no Kafka broker answered at {config.bootstrap_servers} within {timeout:g}s ({exc.args[0].str()})"
        ) from None
