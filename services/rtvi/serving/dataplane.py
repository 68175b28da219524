"""The transport-free data plane: route by model name, validate, decode, batch, respond.

Checks run cheapest first and each failure is a typed error (``errors.py``) that the
interceptor turns into a gRPC status and a metric.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

import numpy as np

from rtvi.protocol.types import InferRequest, InferResponse, Tensor
from rtvi.serving import metrics
from rtvi.serving.errors import ImageTooLarge, InvalidInput, NotReady, TooLarge, UndecodableImage
from rtvi.serving.preprocess import ImageDecodeError, ImageTooLargeError
from rtvi.serving.repository import ModelRepository, ServedModel
from rtvi.serving.tasks.classification import IMAGES


class DataPlane:
    def __init__(self, repository: ModelRepository, max_message_bytes: int, preprocess_executor: Executor) -> None:
        self.repository = repository
        self.max_message_bytes = max_message_bytes
        self._preprocess = preprocess_executor
        self.shutting_down = False

    @property
    def ready(self) -> bool:
        return self.repository.ready and not self.shutting_down

    def ready_model(self, name: str, version: str = "") -> ServedModel:
        model = self.repository.get(name, version)
        if not model.ready:
            raise NotReady(f"model {name!r} is loading; retry once the server is ready")
        return model

    async def infer(self, request: InferRequest) -> InferResponse:
        model = self.ready_model(request.model_name, request.model_version)
        if request.size_bytes > self.max_message_bytes:
            raise TooLarge(f"request of {request.size_bytes} bytes exceeds the server's limit of "
                           f"{self.max_message_bytes} bytes")
        tensor = self._validate(model, request.inputs)
        batch = await self._model_input(model, tensor)
        assert model.batcher is not None and model.task is not None
        try:
            logits = await model.batcher.submit(batch)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        metrics.IMAGES.labels(model.name).inc(len(batch))
        return InferResponse(model.name, model.task.respond(logits, request.outputs), id=request.id)

    def _validate(self, model: ServedModel, inputs: list[Tensor]) -> Tensor:
        """The request's one input, checked against the model's TensorSpecs."""
        assert model.task is not None
        specs = {spec.name: spec for spec in model.task.inputs}
        choices = " or ".join(f"{s.name!r} {s.datatype} {s.describe()}" for s in specs.values())
        if len(inputs) != 1:
            raise InvalidInput(f"expected exactly one input ({choices}), got {len(inputs)}")
        tensor = inputs[0]
        spec = specs.get(tensor.name)
        if spec is None:
            raise InvalidInput(f"unknown input {tensor.name!r}; this model takes {' or '.join(map(repr, specs))}")
        if tensor.datatype != spec.datatype:
            raise InvalidInput(f"input {tensor.name!r} must be {spec.datatype}, got {tensor.datatype!r}")
        shape = list(tensor.shape)
        if not spec.accepts(shape):
            raise InvalidInput(f"input {tensor.name!r} must have shape {spec.describe()}, got {shape}")
        if shape[0] < 1:
            raise InvalidInput(f"input {tensor.name!r} has an empty batch: shape {shape}")
        if shape[0] > model.max_batch_size:
            raise InvalidInput(f"batch of {shape[0]} exceeds this model's max batch size {model.max_batch_size}")
        return tensor

    async def _model_input(self, model: ServedModel, tensor: Tensor) -> np.ndarray:
        """Rows for the batcher, on a preprocess thread: normalized float pixels as the model
        takes them, or uint8 RGB crops of decoded images (a quarter of the bytes to batch),
        which the compute thread normalizes per batch (``ServedModel.run``)."""
        assert model.normalizer is not None and model.geometry is not None
        loop = asyncio.get_running_loop()
        if tensor.name != IMAGES.name:
            return await loop.run_in_executor(self._preprocess, model.normalizer.pixels, tensor.data)
        started = time.perf_counter()
        try:
            batch = await loop.run_in_executor(self._preprocess, model.geometry.batch, tensor.data)
        except ImageTooLargeError as exc:
            raise ImageTooLarge(str(exc)) from None
        except ImageDecodeError as exc:
            raise UndecodableImage(str(exc)) from None
        metrics.PREPROCESS_SECONDS.labels(model.name).observe(time.perf_counter() - started)
        return batch
