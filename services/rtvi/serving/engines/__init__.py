"""Engines run a loaded model on a normalized batch; ``select`` picks one and its settings.

Each engine module imports its own runtime (torch, onnxruntime, openvino) and is
imported only when chosen, so a server running ONNX Runtime never imports torch.
"""
