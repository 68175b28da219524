"""Process lifecycle of `rtvi serve`: health transitions, graceful drain, startup errors."""

from __future__ import annotations

import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import torch
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rtvi.serving.hardware import cpu_info  # /proc/cpuinfo only: no protobuf stubs

from conftest import InferenceServer, Proc, free_port, health_status, jpeg_bytes, metric_sum, rtvi_command

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_is_not_serving_until_warm_then_serving(tmp_path):
    # Loading (export to the model cache on first use, each engine's warm-up, timing them) is
    # long enough to observe the NOT_SERVING phase.
    srv = InferenceServer(tmp_path)
    seen: list[int] = []
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            stream = stub.Watch(
                health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"),
                wait_for_ready=True, timeout=120,
            )
            for response in stream:
                seen.append(response.status)
                if response.status == SERVING:
                    stream.cancel()
                    break
        assert seen[0] == NOT_SERVING, seen
        assert seen[-1] == SERVING, seen
        log = srv.proc.output
        assert "health NOT_SERVING" in log and "health SERVING" in log
        # The default path: resnet18 as ONNX on the engine measured fastest, at a native precision
        # only (OpenVINO's bf16 where the CPU has it, never emulated; ONNX Runtime runs fp32 as stored).
        engine = next(engine for engine in ("onnxruntime", "openvino")
                      if metric_sum(srv.metrics_text(), "rtvi_inference_model_info", model="resnet18", engine=engine))
        expected = "bf16" if engine == "openvino" and cpu_info().native_bf16 else "fp32"
        assert metric_sum(srv.metrics_text(), "rtvi_inference_model_info", model="resnet18", engine=engine,
                          precision=expected, device="cpu") == 1
    finally:
        assert srv.proc.terminate() == 0


def _in_flight(srv: InferenceServer) -> float:
    match = re.search(r'^rtvi_inference_in_flight_requests\{model="resnet18"\} (\S+)$', srv.metrics_text(), re.M)
    return float(match.group(1)) if match else 0.0


def test_sigterm_drains_in_flight_requests(tmp_path):
    srv = InferenceServer(tmp_path, "--max-batch-size", "8", "--shutdown-delay-s", "3", "--shutdown-grace-s", "60")
    srv.wait_serving()
    images = np.array([jpeg_bytes(seed=i) for i in range(8)], dtype=np.object_)

    def infer(_):
        with triton.InferenceServerClient(srv.address) as client:
            tensor = triton.InferInput("images", [8], "BYTES")
            tensor.set_data_from_numpy(images)
            return client.infer("resnet18", [tensor]).as_numpy("logits").shape

    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(infer, i) for i in range(8)]
            deadline = time.monotonic() + 30
            while _in_flight(srv) < 8 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _in_flight(srv) == 8, "requests did not reach the server"
            srv.proc.popen.send_signal(signal.SIGTERM)
            # Health turns NOT_SERVING at once (still answering during the delay)...
            time.sleep(0.5)
            with grpc.insecure_channel(srv.address) as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == NOT_SERVING
            # ...and every request already in flight completes.
            assert [f.result(timeout=120) for f in futures] == [(8, 1000)] * 8
        assert srv.proc.popen.wait(60) == 0
        assert "draining in-flight requests" in srv.proc.output
    finally:
        srv.proc.terminate()


def test_missing_pretrained_weights_fail_clearly(tmp_path):
    proc = Proc(
        rtvi_command("serve", "--host", "127.0.0.1", "--port", str(free_port()), "--metrics-port", "0",
                     "--model-cache", str(tmp_path / "empty-cache")),
        tmp_path / "serve.log",
        env={"TORCH_HOME": str(tmp_path / "empty-hub")},
    )
    try:
        assert proc.popen.wait(120) == 2
    finally:
        proc.kill()
    assert "not in the torch hub cache" in proc.output
    assert "--weights none" in proc.output


def test_unknown_architecture_fails_clearly(tmp_path):
    proc = Proc(
        rtvi_command("serve", "--host", "127.0.0.1", "--port", str(free_port()), "--metrics-port", "0",
                     "--model", "resnet999", "--weights", "none"),
        tmp_path / "serve.log",
    )
    try:
        assert proc.popen.wait(120) == 2
    finally:
        proc.kill()
    assert "unknown torchvision classification model 'resnet999'" in proc.output


def test_bad_configuration_is_a_usage_error(tmp_path):
    proc = Proc(rtvi_command("serve", "--precision", "fp8"), tmp_path / "a.log")
    assert proc.popen.wait(60) == 2
    proc.kill()
    assert "invalid choice: 'fp8'" in proc.output
    proc = Proc(rtvi_command("serve"), tmp_path / "b.log", env={"RTVI_MAX_BATCH_SIZE": "lots"})
    assert proc.popen.wait(60) == 2
    proc.kill()
    assert "RTVI_MAX_BATCH_SIZE='lots'" in proc.output
    proc = Proc(rtvi_command("serve", "--max-batch-size", "0"), tmp_path / "c.log")
    assert proc.popen.wait(60) == 2
    proc.kill()
    assert "max batch size must be >= 1" in proc.output


class Wedge(torch.nn.Module):
    """A real model that computes for as many loop turns as its first input value says:
    zeros (the warm-up) return at once, 1e9 keeps the compute thread busy for many minutes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        turns = int(x[0, 0, 0, 0].item())
        y = x.mean(dim=(2, 3))
        for _ in range(turns):
            y = y * 1.0
        return y


def test_liveness_fails_when_the_model_is_wedged_while_readiness_stays(tmp_path):
    directory = tmp_path / "wedge"
    directory.mkdir()
    torch.jit.script(Wedge()).save(str(directory / "model.pt"))
    (directory / "labels.txt").write_text("r\ng\nb\n")
    (directory / "config.yaml").write_text("resize: 16\ncrop: 16\nmean: [0, 0, 0]\nstd: [1, 1, 1]\n")
    srv = InferenceServer(tmp_path, "--model", str(directory), "--instances", "1", "--liveness-timeout-s", "2",
                          "--precision", "fp32")
    pool = ThreadPoolExecutor(1)
    try:
        srv.wait_serving()
        assert health_status(srv.address, "liveness") == SERVING
        pixels = np.zeros((1, 3, 16, 16), dtype=np.float32)
        pixels[0, 0, 0, 0] = 1e9

        def wedge_it():
            with triton.InferenceServerClient(srv.address) as client:
                tensor = triton.InferInput("pixels", list(pixels.shape), "FP32")
                tensor.set_data_from_numpy(pixels)
                client.infer("wedge", [tensor], client_timeout=120)

        pool.submit(wedge_it)
        deadline = time.monotonic() + 60
        while health_status(srv.address, "liveness", timeout=5) != NOT_SERVING and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health_status(srv.address, "liveness", timeout=5) == NOT_SERVING, srv.proc.output
        # Readiness is a different question: the model is loaded, the process answers.
        assert health_status(srv.address, "", timeout=5) == SERVING
        assert health_status(srv.address, "inference.GRPCInferenceService", timeout=5) == SERVING
        assert "liveness NOT_SERVING" in srv.proc.output
    finally:
        srv.proc.kill()
        pool.shutdown(wait=False)
