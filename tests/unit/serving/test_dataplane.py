"""The data plane, the v2 servicer and the interceptor with a dummy model (as KServe tests its own):
requests through validation, decoding and the dynamic batcher to an engine of ten lines, and every
refusal as its typed error (in-process), then as its gRPC status and metric on a real server on
loopback (in a fresh interpreter: rtvi's stubs cannot share a process with tritonclient's)."""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import cv2
import grpc
import numpy as np
import pytest

from rtvi.protocol.errors import InferenceError
from rtvi.protocol.types import InferRequest, RequestedOutput, Tensor
from rtvi.serving.config import ServerConfig
from rtvi.serving.dataplane import DataPlane
from rtvi.serving.engines.base import Engine, ExecutionPlan
from rtvi.serving.errors import ImageTooLarge, InvalidInput, ModelNotFound, NotReady, TooLarge, UndecodableImage
from rtvi.serving.modeldir import ModelSource, Preprocessing
from rtvi.serving.normalize import Normalizer
from rtvi.serving.preprocess import ImageGeometry
from rtvi.serving.repository import ModelRepository, ServedModel
from rtvi.serving.tasks.classification import ClassificationTask

LABELS = ("dark", "bright")
PREPROCESSING = Preprocessing(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class DummyEngine(Engine):
    """Two classes from the mean normalized pixel: negative is dark, positive bright."""

    name, platform = "dummy", "dummy"

    @staticmethod
    def cuda_available() -> bool:
        return False

    def load(self) -> None:
        pass

    def run(self, batch: np.ndarray) -> np.ndarray:
        mean = batch.reshape(len(batch), -1).mean(axis=1)
        return np.stack([-mean, mean], axis=1).astype(np.float32)


def dummy_model(name: str = "dummy", ready: bool = True) -> ServedModel:
    source = ModelSource(format="onnx", artifact="dummy", labels=LABELS, preprocessing=PREPROCESSING)
    plan = ExecutionPlan("dummy", "cpu", "fp32", instances=1, threads=1)
    model = ServedModel(name, "dummy", max_batch_size=4, source=source, plan=plan, engine=DummyEngine(source, plan),
                        task=ClassificationTask(LABELS), normalizer=Normalizer(PREPROCESSING),
                        geometry=ImageGeometry(resize=32, crop=32, max_pixels=100_000))
    if ready:
        model.start_batching(0.001, lambda stats: None)
    return model


def jpeg(value: int, size: int = 48) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((size, size, 3), value, np.uint8))
    assert ok
    return data.tobytes()


def images(*items: bytes, name: str = "images") -> Tensor:
    return Tensor(name, "BYTES", (len(items),), list(items))


def request(*inputs: Tensor, model: str = "dummy", top: int = 1, size_bytes: int = 0) -> InferRequest:
    return InferRequest(model, list(inputs), [RequestedOutput("logits", class_count=top)], size_bytes=size_bytes)


def answer(req: InferRequest, max_message_bytes: int = 64 * 1024):
    """``req`` through a data plane over the dummy model and one still loading: its response,
    or the error it raised."""

    async def scenario():
        repository = ModelRepository(ServerConfig(), {"dummy": dummy_model(), "loading": dummy_model("loading", False)})
        with ThreadPoolExecutor(1) as pool:
            try:
                return await DataPlane(repository, max_message_bytes, pool).infer(req)
            except Exception as exc:  # noqa: BLE001 - the test judges it
                return exc
            finally:
                await repository.stop()

    return asyncio.run(scenario())


def test_images_go_through_decode_and_the_batcher_to_the_engine():
    (logits,) = answer(request(images(jpeg(10), jpeg(240), jpeg(20)))).outputs
    assert logits.datatype == "BYTES" and logits.shape == (3, 1)
    assert [entry.decode().split(":")[2] for entry in logits.data] == ["dark", "bright", "dark"]


def test_pixels_skip_the_decode():
    batch = np.full((2, 3, 32, 32), 0.7, np.float32)
    (logits,) = answer(request(Tensor("pixels", "FP32", batch.shape, batch), top=0)).outputs
    assert logits.datatype == "FP32" and np.allclose(logits.data, [[-0.7, 0.7], [-0.7, 0.7]])


@pytest.mark.parametrize(("req", "error", "words"), [
    (request(images(jpeg(10)), model="nope"), ModelNotFound, "unknown model 'nope'"),
    (request(images(jpeg(10)), model="loading"), NotReady, "is loading"),
    (request(images(jpeg(10)), size_bytes=10**6), TooLarge, "exceeds the server's limit"),
    (request(images(jpeg(10), name="photos")), InvalidInput, "unknown input 'photos'"),
    (request(Tensor("images", "FP32", (1,), np.zeros(1, np.float32))), InvalidInput, "must be BYTES"),
    (request(images(*[jpeg(10)] * 5)), InvalidInput, "exceeds this model's max batch size 4"),
    (request(images(b"\xff\xd8 not a jpeg")), UndecodableImage, "image 0 of 1"),
    (request(images(jpeg(10, size=400))), ImageTooLarge, "pixels"),
])
def test_each_refusal_is_its_typed_error(req, error, words):
    refusal = answer(req)
    assert isinstance(refusal, error) and words in str(refusal), repr(refusal)


def grpc_round_trip() -> tuple[list[list[str]], dict[str, str], float, float]:
    """A real grpc.aio server on loopback with the servicer and the interceptor over the dummy model,
    called with rtvi's own v2 client: its answers, the status codes of two refusals, and how the
    interceptor counted (refusals by reason, calls by status)."""
    from prometheus_client import REGISTRY

    from rtvi.protocol._generated import grpc_service_pb2_grpc as pb_grpc
    from rtvi.protocol.client import InferenceClient
    from rtvi.serving.grpc_servicer import InferenceServicer
    from rtvi.serving.interceptors import ServingInterceptor

    def counted(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"model": "dummy", **labels}) or 0

    async def scenario():
        repository = ModelRepository(ServerConfig(), {"dummy": dummy_model()})  # batching starts in this loop
        pool = ThreadPoolExecutor(1)
        server = grpc.aio.server(interceptors=[ServingInterceptor(repository.metric_label)])
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(DataPlane(repository, 1 << 20, pool)),
                                                           server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = InferenceClient(f"127.0.0.1:{port}", "dummy")
        try:
            answers = await client.classify([jpeg(240), jpeg(5)], top_k=2)
            codes = {}
            for name, call in {"corrupt": client.classify([b"\xff\xd8 nope"]),
                               "unknown": InferenceClient(f"127.0.0.1:{port}", "nope").classify([jpeg(1)])}.items():
                try:
                    await call
                except InferenceError as exc:
                    codes[name] = exc.code
            return ([[c.label for c in top] for top in answers], codes,
                    counted("rtvi_inference_errors_total", reason="decode"),
                    counted("rtvi_inference_requests_total", status="OK"))
        finally:
            await client.close()
            await server.stop(0)
            await repository.stop()
            pool.shutdown()

    return asyncio.run(scenario())


def test_the_servicer_and_interceptor_answer_over_grpc_with_statuses_and_metrics():
    # In a fresh interpreter (the same code): in a full test run, tritonclient (the peer client of
    # the integration tests) has registered the protobuf package of rtvi's own stubs already.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        answers, codes, decode_errors, ok = pool.apply(grpc_round_trip)
    assert answers == [["bright", "dark"], ["dark", "bright"]]
    assert codes == {"corrupt": "INVALID_ARGUMENT", "unknown": "NOT_FOUND"}
    assert decode_errors == 1 and ok == 1, "the interceptor counts each call by its status, a refusal by its reason"
