"""`rtvi consume`'s /livez and /readyz against real processes: a real broker, a real
server, and a real stall of the consumer's event loop (the --debug-stall-s diagnostic)."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request

from conftest import InferenceServer, free_port, start_consumer


def probe(port: int, path: str) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return None, str(exc)


def wait_probe(port: int, path: str, status: int, timeout: float, proc) -> str:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = probe(port, path)
        if seen[0] == status:
            return seen[1]
        time.sleep(0.2)
    raise AssertionError(f"{path} never answered {status} (last: {seen})\n{proc.output}")


def test_readiness_follows_assignment_and_inference_and_liveness_sees_a_stalled_loop(tmp_path, broker, topics,
                                                                                        checkpoint):
    grpc_port, metrics_port = free_port(), free_port()
    consumer = start_consumer(
        tmp_path, broker, topics, f"127.0.0.1:{grpc_port}", "--metrics-port", str(metrics_port),
        "--metrics-host", "127.0.0.1", "--liveness-timeout-s", "2", "--readiness-interval-s", "0.5",
        "--debug-stall-s", "8",
    )
    server = None
    try:
        # Assigned, but nothing listens where the inference service should be: not ready.
        body = wait_probe(metrics_port, "/livez", 200, 30, consumer)
        assert body.startswith("ok")
        deadline = time.monotonic() + 60
        while "inference service" not in probe(metrics_port, "/readyz")[1]:
            assert time.monotonic() < deadline, consumer.output
            time.sleep(0.2)
        server = InferenceServer(tmp_path, "--weights", str(checkpoint), "--max-batch-size", "4", port=grpc_port)
        server.wait_serving()
        assert "partition(s) assigned" in wait_probe(metrics_port, "/readyz", 200, 60, consumer)

        consumer.popen.send_signal(signal.SIGUSR1)  # the loop sleeps 8 s: no polls
        stalled_at = time.monotonic()
        body = wait_probe(metrics_port, "/livez", 503, 7, consumer)
        assert "event loop stalled" in body
        assert time.monotonic() - stalled_at < 7
        wait_probe(metrics_port, "/livez", 200, 30, consumer)  # the stall ends, the loop polls again
        assert "blocking the event loop" in consumer.output
    finally:
        assert consumer.terminate() == 0, consumer.output
        if server:
            server.proc.terminate()
