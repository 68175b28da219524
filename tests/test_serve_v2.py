"""`rtvi serve` against tritonclient.grpc, the v2 client Triton users already have."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from conftest import jpeg_bytes

MODEL = "resnet18"


@pytest.fixture(scope="module")
def client(server):
    with triton.InferenceServerClient(server.address) as c:
        yield c


def images_input(images: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput("images", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


def test_live_ready_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(MODEL)
    with pytest.raises(InferenceServerException, match="NOT_FOUND.*unknown model 'no-such-model'"):
        client.is_model_ready("no-such-model")
    server_meta = client.get_server_metadata(as_json=True)
    assert server_meta["name"] == "rtvi" and "classification" in server_meta["extensions"]
    meta = client.get_model_metadata(MODEL, as_json=True)
    assert {t["name"]: t["datatype"] for t in meta["inputs"]} == {"images": "BYTES", "pixels": "FP32"}
    assert meta["outputs"][0]["name"] == "logits" and meta["outputs"][0]["shape"] == ["-1", "1000"]
    config = client.get_model_config(MODEL, as_json=True)["config"]
    assert config["max_batch_size"] == 8
    assert [i["name"] for i in config["input"]] == ["images", "pixels"]
    assert config["output"][0]["dims"] == ["1000"]


def test_jpeg_batch_top5_classification(client):
    images = [jpeg_bytes(seed=i) for i in range(3)]
    result = client.infer(
        MODEL, [images_input(images)], outputs=[triton.InferRequestedOutput("logits", class_count=5)]
    )
    top = result.as_numpy("logits")
    assert top.shape == (3, 5)
    labels = torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"]
    for row in top:
        scores = []
        for entry in row:
            score, index, label = entry.decode().split(":", 2)
            assert label == labels[int(index)]
            scores.append(float(score))
        assert scores == sorted(scores, reverse=True)


def test_fp32_pixels_match_torchvision(client, checkpoint):
    """Logits over the wire equal the same checkpoint run directly in torchvision."""
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 224, 224)
    tensor = triton.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels.numpy())
    served = client.infer(MODEL, [tensor], outputs=[triton.InferRequestedOutput("logits")]).as_numpy("logits")
    reference = torchvision.models.resnet18(weights=None)
    reference.load_state_dict(torch.load(checkpoint, weights_only=True))
    with torch.inference_mode():
        expected = reference.eval()(pixels).numpy()
    assert served.shape == (2, 1000)
    np.testing.assert_allclose(served, expected, rtol=1e-3, atol=1e-3)
    assert (served.argmax(1) == expected.argmax(1)).all()


def _infer_error(client, inputs, model=MODEL) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        client.infer(model, inputs)
    return info.value


def _tensor(name: str, array: np.ndarray, datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def error_count(server, reason: str) -> float:
    for line in server.metrics_text().splitlines():
        if line.startswith("rtvi_inference_errors_total{") and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


BAD_REQUESTS = {
    "corrupt_jpeg": (
        lambda: [images_input([jpeg_bytes()[:2000]])], MODEL, "INVALID_ARGUMENT", "image 0 of 1", "decode"),
    "empty_bytes": (lambda: [images_input([jpeg_bytes(), b""])], MODEL, "INVALID_ARGUMENT", "image 1 of 2: empty", "decode"),
    "wrong_dtype": (
        lambda: [_tensor("pixels", np.zeros((1, 3, 224, 224), np.int32), "INT32")],
        MODEL, "INVALID_ARGUMENT", "must be FP32, got 'INT32'", "invalid_input"),
    "wrong_shape": (
        lambda: [_tensor("pixels", np.zeros((1, 224, 224, 3), np.float32), "FP32")],
        MODEL, "INVALID_ARGUMENT", "must have shape [N,3,H,W]", "invalid_input"),
    "unknown_input": (
        lambda: [_tensor("frames", np.zeros((1, 3, 224, 224), np.float32), "FP32")],
        MODEL, "INVALID_ARGUMENT", "unknown input 'frames'", "invalid_input"),
    "batch_too_big": (
        lambda: [_tensor("pixels", np.zeros((9, 3, 32, 32), np.float32), "FP32")],
        MODEL, "INVALID_ARGUMENT", "exceeds this model's max batch size 8", "invalid_input"),
    "unknown_model": (lambda: [images_input([jpeg_bytes()])], "resnet999", "NOT_FOUND", "unknown model 'resnet999'", "unknown_model"),
    "oversize": (
        lambda: [images_input([b"\xff\xd8" + bytes(400_000)] * 6)],
        MODEL, "RESOURCE_EXHAUSTED", "exceeds the server's limit of 2097152 bytes", "too_large"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_is_rejected_clearly_and_counted(client, server, case):
    make_inputs, model, status, message, reason = BAD_REQUESTS[case]
    before = error_count(server, reason)
    error = _infer_error(client, make_inputs(), model)
    assert error.status() == f"StatusCode.{status}", error
    assert message in error.message(), error.message()
    assert error_count(server, reason) == before + 1
    # and the server keeps serving
    ok = client.infer(MODEL, [images_input([jpeg_bytes()])], outputs=[triton.InferRequestedOutput("logits", class_count=1)])
    assert ok.as_numpy("logits").shape == (1, 1)


def test_bad_image_fails_only_its_own_request(client):
    """Concurrent requests share batches; one corrupt image must not fail its neighbours."""
    from concurrent.futures import ThreadPoolExecutor

    def call(i):
        image = b"not an image" if i == 3 else jpeg_bytes(seed=i)
        try:
            client.infer(MODEL, [images_input([image])])
            return "ok"
        except InferenceServerException as exc:
            return exc.status()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(8)))
    assert results == ["ok"] * 3 + ["StatusCode.INVALID_ARGUMENT"] + ["ok"] * 4


def test_metrics_describe_batching(server, client):
    client.infer(MODEL, [images_input([jpeg_bytes(), jpeg_bytes(seed=1)])])
    text = server.metrics_text()
    for name in (
        'rtvi_inference_requests_total{model="resnet18",status="OK"}',
        "rtvi_inference_batch_size_bucket",
        "rtvi_inference_queue_duration_seconds_bucket",
        "rtvi_inference_preprocess_duration_seconds_bucket",
        "rtvi_inference_compute_duration_seconds_bucket",
        'rtvi_inference_in_flight_requests{model="resnet18"}',
        'rtvi_inference_model_ready{model="resnet18"} 1.0',
    ):
        assert name in text, name


def test_other_triton_rpcs_answer_unimplemented(client):
    with pytest.raises(InferenceServerException) as info:
        client.get_model_repository_index()
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"
