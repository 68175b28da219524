"""The ONNX Runtime engine: CPU execution provider, CUDA when onnxruntime-gpu sees a GPU.

No torch here: a server of ONNX models runs without torch installed. Each instance has
its own session (Triton's instance semantics): concurrent runs never share an
intra-op thread pool.
"""

from __future__ import annotations

import queue

import numpy as np
import onnxruntime as ort

from rtvi.serving.engines.base import Engine, pick_tensor
from rtvi.serving.errors import ModelLoadError, first_line

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    platform = "onnxruntime_onnx"

    @staticmethod
    def cuda_available() -> bool:
        return "CUDAExecutionProvider" in ort.get_available_providers()

    def _session(self) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.plan.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads would spin and take the cores from image decoding
        # (as torch's OpenMP workers do with OMP_WAIT_POLICY=ACTIVE).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if self.plan.device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        try:
            return ort.InferenceSession(self.source.artifact, options, providers=providers)
        except Exception as exc:  # corrupt file or unsupported graph: onnxruntime raises its own types
            raise ModelLoadError(f"{self.source.artifact}: cannot load as an ONNX model: {first_line(exc)}") from None

    def load(self) -> None:
        sessions = [self._session() for _ in range(self.plan.instances)]
        first = sessions[0]
        path = self.source.artifact
        self._input = pick_tensor(path, "input", [i.name for i in first.get_inputs()], self.source.input_name)
        self._output = pick_tensor(path, "output", [o.name for o in first.get_outputs()], self.source.output_name)
        input_type = next(i.type for i in first.get_inputs() if i.name == self._input)
        if input_type not in _DTYPES:
            raise ModelLoadError(f"{path}: input {self._input!r} is {input_type}; a float input is needed")
        self._dtype = _DTYPES[input_type]
        self._free: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        for session in sessions:
            self._free.put(session)

    def run(self, batch: np.ndarray) -> np.ndarray:
        inputs = np.ascontiguousarray(batch, dtype=self._dtype)
        session = self._free.get()
        try:
            (outputs,) = session.run([self._output], {self._input: inputs})
        finally:
            self._free.put(session)
        return np.asarray(outputs, dtype=np.float32)
