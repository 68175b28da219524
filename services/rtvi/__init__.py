"""rtvi: real-time video inference over Kafka/Redpanda and the Open Inference Protocol v2."""

__version__ = "0.1.0"
