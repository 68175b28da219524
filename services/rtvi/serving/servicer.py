"""The v2 GRPCInferenceService: validates requests, feeds the batcher, shapes responses."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

import grpc
import numpy as np

from rtvi import __version__
from rtvi.protocol import tensors
from rtvi.protocol._generated import grpc_service_pb2 as pb
from rtvi.protocol._generated import grpc_service_pb2_grpc as pb_grpc
from rtvi.serving import metrics
from rtvi.serving.batcher import DynamicBatcher
from rtvi.serving.errors import RequestError, invalid
from rtvi.serving.model import ModelSpec
from rtvi.serving.preprocess import ImageDecodeError

IMAGES_INPUT = "images"  # BYTES [N]: encoded JPEG/PNG, decoded by the server
PIXELS_INPUT = "pixels"  # FP32 [N, 3, H, W]: already normalized
LOGITS_OUTPUT = "logits"  # FP32 [N, classes]
CLASSIFICATION = "classification"  # requested-output parameter: top-k as BYTES
PLATFORM = "pytorch_torchvision"
EXTENSIONS = ["classification", "model_configuration"]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self, model_name: str, max_batch_size: int, max_message_bytes: int, preprocess_executor: Executor
    ) -> None:
        self.model_name = model_name
        self.max_batch_size = max_batch_size
        self.max_message_bytes = max_message_bytes
        self._preprocess_executor = preprocess_executor
        self.spec: ModelSpec | None = None
        self.batcher: DynamicBatcher | None = None
        self.shutting_down = False

    def set_ready(self, spec: ModelSpec, batcher: DynamicBatcher) -> None:
        self.spec, self.batcher = spec, batcher

    @property
    def ready(self) -> bool:
        return self.spec is not None

    # --- health and metadata -------------------------------------------------
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.ready and not self.shutting_down)

    async def ModelReady(self, request, context):
        await self._check_model(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self.ready)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="rtvi", version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):
        await self._check_model(request.name, request.version, context)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=self.model_name,
            versions=["1"],
            platform=PLATFORM,
            inputs=[
                tensor(name=IMAGES_INPUT, datatype="BYTES", shape=[-1]),
                tensor(name=PIXELS_INPUT, datatype="FP32", shape=[-1, 3, -1, -1]),
            ],
            outputs=[tensor(name=LOGITS_OUTPUT, datatype="FP32", shape=[-1, self._classes()])],
        )

    async def ModelConfig(self, request, context):
        await self._check_model(request.name, request.version, context)
        return pb.ModelConfigResponse(
            config=pb.ModelConfig(
                name=self.model_name,
                platform=PLATFORM,
                backend="pytorch",
                max_batch_size=self.max_batch_size,
                input=[
                    pb.ModelInput(name=IMAGES_INPUT, data_type=pb.TYPE_STRING, dims=[1], optional=True),
                    pb.ModelInput(
                        name=PIXELS_INPUT, data_type=pb.TYPE_FP32, format=pb.ModelInput.FORMAT_NCHW,
                        dims=[3, -1, -1], optional=True,
                    ),
                ],
                output=[pb.ModelOutput(name=LOGITS_OUTPUT, data_type=pb.TYPE_FP32, dims=[self._classes()])],
            )
        )

    def _classes(self) -> int:
        return len(self.spec.labels) if self.spec else -1

    def _require_model(self, name: str, version: str) -> None:
        if name != self.model_name or version not in ("", "1"):
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"unknown model {name!r} version {version!r}; this server serves {self.model_name!r} (version 1)",
                "unknown_model",
            )

    async def _check_model(self, name: str, version: str, context) -> None:
        try:
            self._require_model(name, version)
        except RequestError as exc:
            metrics.ERRORS.labels(self.model_name, exc.reason).inc()
            await context.abort(exc.code, exc.message)

    # --- inference -----------------------------------------------------------
    async def ModelInfer(self, request, context):
        started = time.perf_counter()
        model = self.model_name
        metrics.IN_FLIGHT.labels(model).inc()
        try:
            response = await self._infer(request)
        except RequestError as exc:
            metrics.ERRORS.labels(model, exc.reason).inc()
            metrics.REQUESTS.labels(model, exc.code.name).inc()
            await context.abort(exc.code, exc.message)
        except asyncio.CancelledError:
            metrics.REQUESTS.labels(model, "CANCELLED").inc()
            raise
        except Exception as exc:  # a model failure must not take the server down
            metrics.ERRORS.labels(model, "internal").inc()
            metrics.REQUESTS.labels(model, "INTERNAL").inc()
            await context.abort(grpc.StatusCode.INTERNAL, f"inference failed: {exc}")
        finally:
            metrics.IN_FLIGHT.labels(model).dec()
        metrics.REQUESTS.labels(model, "OK").inc()
        metrics.REQUEST_SECONDS.labels(model).observe(time.perf_counter() - started)
        return response

    async def _infer(self, request) -> pb.ModelInferResponse:
        self._require_model(request.model_name, request.model_version)
        if not self.ready:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "model is loading; retry once the server is ready", "not_ready")
        size = request.ByteSize()
        if size > self.max_message_bytes:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request of {size} bytes exceeds the server's limit of {self.max_message_bytes} bytes",
                "too_large",
            )
        kind, inputs = await self._decode_input(request)
        batch = len(inputs)
        try:
            logits = await self.batcher.submit(kind, inputs)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        metrics.IMAGES.labels(self.model_name).inc(batch)
        return self._response(request, logits)

    async def _decode_input(self, request) -> tuple[tuple, np.ndarray]:
        if len(request.inputs) != 1:
            raise invalid(
                f"expected exactly one input ({IMAGES_INPUT!r} BYTES [N] or {PIXELS_INPUT!r} FP32 [N,3,H,W]), "
                f"got {len(request.inputs)}"
            )
        tensor = request.inputs[0]
        raw = request.raw_input_contents[0] if request.raw_input_contents else None
        if tensor.name not in (IMAGES_INPUT, PIXELS_INPUT):
            raise invalid(f"unknown input {tensor.name!r}; this model takes {IMAGES_INPUT!r} or {PIXELS_INPUT!r}")
        expected = "BYTES" if tensor.name == IMAGES_INPUT else "FP32"
        if tensor.datatype != expected:
            raise invalid(f"input {tensor.name!r} must be {expected}, got {tensor.datatype!r}")
        shape = list(tensor.shape)
        if tensor.name == IMAGES_INPUT and not (len(shape) in (1, 2) and (len(shape) == 1 or shape[1] == 1)):
            raise invalid(f"input {IMAGES_INPUT!r} must have shape [N] or [N,1], got {shape}")
        if tensor.name == PIXELS_INPUT and not (len(shape) == 4 and shape[1] == 3 and min(shape[2:]) >= 16):
            raise invalid(f"input {PIXELS_INPUT!r} must have shape [N,3,H,W] with H,W >= 16, got {shape}")
        if not shape or shape[0] < 1:
            raise invalid(f"input {tensor.name!r} has an empty batch: shape {shape}")
        if shape[0] > self.max_batch_size:
            raise invalid(f"batch of {shape[0]} exceeds this model's max batch size {self.max_batch_size}")
        try:
            values = tensors.input_values(tensor, raw)
        except tensors.TensorError as exc:
            raise invalid(str(exc)) from None
        if tensor.name == PIXELS_INPUT:
            return ("pixels", *shape[1:]), np.ascontiguousarray(values)
        geometry = self.spec.geometry
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            images = await loop.run_in_executor(self._preprocess_executor, geometry.batch, values)
        except ImageDecodeError as exc:
            raise invalid(str(exc), reason=exc.reason) from None
        metrics.PREPROCESS_SECONDS.labels(self.model_name).observe(time.perf_counter() - started)
        return ("images",), images

    def _response(self, request, logits: np.ndarray) -> pb.ModelInferResponse:
        response = pb.ModelInferResponse(model_name=self.model_name, model_version="1", id=request.id)
        requested = list(request.outputs) or [pb.ModelInferRequest.InferRequestedOutputTensor(name=LOGITS_OUTPUT)]
        for output in requested:
            if output.name != LOGITS_OUTPUT:
                raise invalid(f"unknown output {output.name!r}; this model produces {LOGITS_OUTPUT!r}")
            top_k = output.parameters[CLASSIFICATION].int64_param if CLASSIFICATION in output.parameters else 0
            if top_k > 0:
                strings = self._classify(logits, top_k)
                response.outputs.add(name=LOGITS_OUTPUT, datatype="BYTES", shape=[len(strings), len(strings[0])])
                response.raw_output_contents.append(tensors.encode_bytes(s for row in strings for s in row))
            else:
                response.outputs.add(name=LOGITS_OUTPUT, datatype="FP32", shape=list(logits.shape))
                response.raw_output_contents.append(tensors.raw_contents(logits, "FP32"))
        return response

    def _classify(self, logits: np.ndarray, top_k: int) -> list[list[bytes]]:
        """Top-k per row as Triton's "score:index:label" strings, best first."""
        labels = self.spec.labels
        k = min(top_k, logits.shape[1])
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        return [[f"{row[i]:f}:{i}:{labels[i]}".encode() for i in idx] for row, idx in zip(logits, top, strict=True)]
