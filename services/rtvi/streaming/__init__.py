"""Kafka side of the pipeline: frame sources, the producer, the consumer, their metrics.

Nothing here imports torch: the consumer image ships without it.
"""
