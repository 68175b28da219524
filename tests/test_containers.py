"""The images built from the Dockerfiles as they are (only build args differ) and run
for real on a private Docker engine: the inference container serves v2 and reports
SERVING after warm-up, serving its torchvision model from the ONNX export baked into its
model cache on the engine it measured fastest; the consumer image's producer and consumer
move frames through a broker on the host, both run as non-root and stop on SIGTERM within
their grace period; the ONNX-only inference image (ENGINE=onnx) holds no torch and serves
the model its builder stage exported, on ONNX Runtime or OpenVINO.

Here the base image is built from Debian packages (no registry is reachable) and torch
comes from PyPI (a CUDA build of several GB); users build on python:3.11-slim with the
CPU wheel index (see README). Slow (several minutes): marked `docker`.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2

from conftest import free_port, health_status, jpeg_bytes, read_predictions
from rtvi.streaming.consumer import report
from rtvi.streaming.probe import wait_until

# Building the images (and installing the engine on a fresh machine) takes minutes.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

CONSUMER_LIMIT_BYTES = 400 * 1000 * 1000
ONNX_INFERENCE_LIMIT_BYTES = 700 * 1000 * 1000
GRACE_S = 30


@pytest.fixture(scope="module")
def engine(docker_engine):
    return docker_engine


@pytest.fixture(scope="module")
def images(rtvi_images):
    built = {name: rtvi_images.get(name) for name in ("consumer", "inference", "inference-onnx")}
    print(f"base {rtvi_images.base}: {rtvi_images.engine.image_size(rtvi_images.base) / 1e6:.0f} MB")
    return built


def run(engine, image: str, name: str, *args: str, env: dict[str, str]) -> str:
    flags = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    engine.docker("run", "-d", "--name", name, "--network", "host", *flags, image, *args)
    return name


def logs(engine, name: str) -> str:
    out = engine.docker("logs", name, check=False)
    return out.stdout + out.stderr


def stop_within_grace(engine, name: str) -> float:
    started = time.monotonic()
    engine.docker("stop", "-t", str(GRACE_S), name)
    elapsed = time.monotonic() - started
    state = engine.docker("inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", name).stdout.split()
    assert state == ["0", "false"], (state, logs(engine, name)[-3000:])
    assert elapsed < GRACE_S, f"{name} needed {elapsed:.0f}s (SIGKILL at {GRACE_S}s)"
    return elapsed


def test_consumer_image_is_small_and_has_no_torch(engine, images):
    tag, size = images["consumer"]
    assert size < CONSUMER_LIMIT_BYTES, f"consumer image is {size / 1e6:.0f} MB"
    out = engine.docker("run", "--rm", "--entrypoint", "python3", tag, "-c",
                        "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('kubernetes'))")
    assert out.stdout.split() == ["None", "None"]


def served_parameters(client, model: str) -> dict[str, str]:
    config = client.get_model_config(model, as_json=True)["config"]
    return {key: value["string_value"] for key, value in config["parameters"].items()}


def wait_serving(engine, name: str, address: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while health_status(address, "inference.GRPCInferenceService") != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, logs(engine, name)
        time.sleep(0.1)


def test_onnx_image_has_no_torch_and_serves_its_exported_model(engine, images):
    tag, size = images["inference-onnx"]
    _, torch_size = images["inference"]
    print(f"\nONNX-only inference image: {size / 1e6:.0f} MB (torch image: {torch_size / 1e6:.0f} MB)")
    assert size < ONNX_INFERENCE_LIMIT_BYTES, f"ONNX-only image is {size / 1e6:.0f} MB"
    out = engine.docker("run", "--rm", "--entrypoint", "python3", tag, "-c",
                        "import importlib.util as u; print(*(u.find_spec(m) is not None for m in "
                        "('torch', 'torchvision', 'onnxruntime', 'openvino')))")
    assert out.stdout.split() == ["False", "False", "True", "True"], out.stdout + out.stderr
    assert engine.docker("run", "--rm", "--entrypoint", "python3", tag, "-c", "import torch", check=False).returncode != 0
    assert engine.docker("image", "inspect", "-f", "{{.Config.User}}", tag).stdout.strip() == "10001:10001"

    port = free_port()
    address = f"127.0.0.1:{port}"
    server = run(engine, tag, "rtvi-test-inference-onnx", env={
        "RTVI_HOST": "127.0.0.1", "RTVI_PORT": str(port), "RTVI_METRICS_PORT": str(free_port()),
        "RTVI_SHUTDOWN_GRACE_S": "20"})
    wait_serving(engine, server, address)
    with triton.InferenceServerClient(address) as client:
        parameters = served_parameters(client, "resnet18")
        assert parameters["engine"] in ("onnxruntime", "openvino") and parameters["engine_choice"] == "measured", parameters
        assert parameters["source"] == "onnx" and parameters["artifact"] == "/opt/model/model.onnx", parameters
        images_in = triton.InferInput("images", [2], "BYTES")
        images_in.set_data_from_numpy(np.array([jpeg_bytes(seed=3), jpeg_bytes(seed=4)], dtype=np.object_))
        result = client.infer("resnet18", [images_in], outputs=[triton.InferRequestedOutput("logits")])
        assert result.as_numpy("logits").shape == (2, 1000)
    stop_within_grace(engine, server)


def test_images_run_the_pipeline_as_non_root(engine, images, broker, topics):
    inference_tag, _ = images["inference"]
    consumer_tag, _ = images["consumer"]
    for tag in (inference_tag, consumer_tag):
        assert engine.docker("image", "inspect", "-f", "{{.Config.User}}", tag).stdout.strip() == "10001:10001"
    port, metrics_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    server = run(engine, inference_tag, "rtvi-test-inference", env={
        "RTVI_HOST": "127.0.0.1", "RTVI_PORT": str(port), "RTVI_METRICS_PORT": str(metrics_port),
        "RTVI_SHUTDOWN_GRACE_S": "20"})
    seen = []
    deadline = time.monotonic() + 300
    while (status := health_status(address, "inference.GRPCInferenceService")) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, logs(engine, server)
        if status is not None:
            seen.append(status)
        time.sleep(0.1)
    assert seen and seen[0] == health_pb2.HealthCheckResponse.NOT_SERVING, "not SERVING before warm-up"
    assert engine.docker("exec", server, "id", "-u").stdout.strip() == "10001"

    with triton.InferenceServerClient(address) as client:
        # The default model is the ONNX export baked into the image's model cache, not eager torch.
        parameters = served_parameters(client, "resnet18")
        assert parameters["source"] == "onnx" and parameters["artifact"].startswith("/opt/rtvi-models/resnet18-"), parameters
        assert parameters["engine"] in ("onnxruntime", "openvino"), parameters
        images_in = triton.InferInput("images", [2], "BYTES")
        images_in.set_data_from_numpy(np.array([jpeg_bytes(seed=1), jpeg_bytes(seed=2)], dtype=np.object_))
        result = client.infer("resnet18", [images_in], outputs=[triton.InferRequestedOutput("logits", class_count=3)])
        assert result.as_numpy("logits").shape == (2, 3)

    kafka = {"RTVI_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
    consumer_metrics = free_port()
    consumer = run(engine, consumer_tag, "rtvi-test-consumer", "consume", env={
        **kafka, "RTVI_TOPIC": topics["frames"], "RTVI_PREDICTIONS_TOPIC": topics["predictions"],
        "RTVI_GROUP": topics["group"], "RTVI_INFERENCE_URL": address, "RTVI_METRICS_HOST": "127.0.0.1",
        "RTVI_METRICS_PORT": str(consumer_metrics), "RTVI_SESSION_TIMEOUT_MS": "6000", "RTVI_REPORT_INTERVAL": "0"})
    producer = run(engine, consumer_tag, "rtvi-test-producer", "produce", env={
        **kafka, "RTVI_TOPIC": topics["frames"], "RTVI_STREAMS": "2", "RTVI_MAX_FRAMES": "10", "RTVI_FPS": "0",
        "RTVI_SYNTHETIC_SIZE": "320x240"})
    assert engine.docker("wait", producer).stdout.strip() == "0", logs(engine, producer)
    assert "20 delivered, 0 delivery errors" in logs(engine, producer)
    predictions = read_predictions(broker, topics["predictions"], 20, timeout=120)
    assert len(predictions) == 20 and all("top" in p for p in predictions), logs(engine, consumer)[-3000:]

    _, figures = wait_until(f"http://127.0.0.1:{consumer_metrics}/metrics", lambda m: m.processed == 20, 30)
    assert figures.failed == 0
    stop_within_grace(engine, consumer)
    assert report.END in logs(engine, consumer)  # the final block, for `docker logs` readers
    stop_within_grace(engine, server)
    assert "draining in-flight requests" in logs(engine, server)
