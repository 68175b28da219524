"""The chart's view container, run for real as a local process (as test_chart_containers does for
the others): the rendered args and env against a real broker, probed on its rendered paths and
port the way the kubelet's httpGet probes do."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import yaml

from conftest import Proc, free_port, make_topics
from test_chart import chart, helm, one  # noqa: F401  (fixtures)
from test_chart_containers import container, http_probe, process_env
from test_streaming_pipeline import wait_for


def test_the_rendered_view_container_runs_and_its_probes_pass(helm, chart, broker, tmp_path, request):  # noqa: F811
    topics = make_topics(broker, request.node.name)
    port = free_port()
    out = subprocess.run([helm, "template", "rtvi", str(chart), "--set", "view.enabled=true", "--set",
                          f"view.port={port}", "--set", "redpanda.enabled=false", "--set",
                          f"kafka.bootstrapServers={broker.bootstrap_servers}", "--set",
                          f"topics.frames.name={topics['frames']}", "--set",
                          f"topics.predictions.name={topics['predictions']}"],
                         capture_output=True, text=True, check=True)
    rendered = container(one([d for d in yaml.safe_load_all(out.stdout) if d], "Deployment", "-view"))
    assert rendered["args"] == ["view"]
    # Loopback instead of the pod's 0.0.0.0; everything else as rendered.
    view = Proc([sys.executable, "-m", "rtvi", *rendered["args"]], tmp_path / "view.log",
                env=process_env(rendered, RTVI_HOST="127.0.0.1"))
    try:
        wait_for(lambda: view.popen.poll() is not None or http_probe(rendered, "readinessProbe") == 200, 60,
                 "the readiness probe", view)
        assert view.popen.poll() is None, view.output
        assert http_probe(rendered, "livenessProbe") == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
            assert b'src="/static/grid.js"' in response.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/live.js", timeout=5) as response:
            assert response.status == 200
        started = time.monotonic()
        assert view.terminate() == 0, view.output
        assert time.monotonic() - started < 10
    finally:
        view.kill()
