"""The OpenVINO engine (optional extra ``rtvi[openvino]``): ONNX models on the CPU.

Each instance compiles its own single-stream model (Triton's instance semantics, as the
ONNX Runtime engine's session per instance). With one thread per instance OpenVINO then
infers on the calling compute thread itself; one model with a stream per instance would
hand every batch to a stream thread and back, two wake-ups per batch on busy cores (on 2
cores, OpenVINO int8 left 6-8% of the CPU idle that way, against 2-3% for ONNX Runtime).
bf16 uses OpenVINO's inference precision hint (native bf16 CPUs only by default, see
``select.choose_precision``).
"""

from __future__ import annotations

import queue

import numpy as np
import openvino as ov

from rtvi.serving.engines.base import Engine, pick_tensor
from rtvi.serving.errors import ModelLoadError, first_line

_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoEngine(Engine):
    name = "openvino"
    platform = "openvino"

    @staticmethod
    def cuda_available() -> bool:
        return False  # OpenVINO targets Intel GPUs, not CUDA

    def load(self) -> None:
        path = self.source.artifact
        core = ov.Core()
        try:
            model = core.read_model(path)
        except Exception as exc:  # corrupt file: OpenVINO raises RuntimeError subclasses with long texts
            raise ModelLoadError(f"{path}: cannot load as an ONNX model: {first_line(exc)}") from None
        self._input = pick_tensor(path, "input", [i.get_any_name() for i in model.inputs], self.source.input_name)
        self._output = pick_tensor(path, "output", [o.get_any_name() for o in model.outputs], self.source.output_name)
        properties = {
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(self.plan.threads),
            "ENABLE_CPU_PINNING": "NO",  # the cores are shared with the image decoders
        }
        if self.source.stored_precision == "fp32":
            properties["INFERENCE_PRECISION_HINT"] = _PRECISION_HINT[self.plan.precision]
        self._requests: queue.SimpleQueue[ov.InferRequest] = queue.SimpleQueue()
        for _ in range(self.plan.instances):
            self._requests.put(core.compile_model(model, "CPU", properties).create_infer_request())

    def run(self, batch: np.ndarray) -> np.ndarray:
        request = self._requests.get()
        try:
            # Shared, not copied: the batch is not touched until this call returns.
            results = request.infer({self._input: np.ascontiguousarray(batch, dtype=np.float32)}, share_inputs=True)
            outputs = next(value for port, value in results.items() if self._output in port.get_names())
        finally:
            self._requests.put(request)
        return np.array(outputs, dtype=np.float32)
