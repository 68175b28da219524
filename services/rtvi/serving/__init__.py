"""The inference service: Open Inference Protocol v2 over gRPC with dynamic batching.

Importing this package pulls in torch; the consumer and producer never do.
"""
