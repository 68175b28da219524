"""The inference service: Open Inference Protocol v2 over gRPC with dynamic batching.

torch, onnxruntime and openvino are imported only by the engine a model runs on
(``engines/``); the consumer and producer never import this package's engines.
"""
