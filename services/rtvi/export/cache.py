"""torchvision names served as ONNX: exported once into a cache, then loaded without torch.

`rtvi serve --model resnet18` is fastest as an ONNX model on the measured-fastest engine,
not in eager torch. The first start exports the architecture and its weights with
`rtvi export` (which checks the written file against torch on a batch) into
``<cache>/<architecture>-<weights>-rtvi<version>/``, a model directory like any other;
later starts, and images that bake the cache at build time, find it there and import no
torch. The key names what decides the graph: the architecture, the weights (torchvision's
DEFAULT for the installed torchvision release, random init, or a checkpoint's SHA-256)
and this rtvi's version (the export recipe).
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from rtvi import __version__
from rtvi.export.errors import ExportError
from rtvi.serving.errors import ModelLoadError

log = logging.getLogger(__name__)

# The exported file must give torch's top-1 on the check batch and logits this close.
PARITY_MAX_ABS_DELTA = 1e-2


def default_root() -> Path:
    """``$XDG_CACHE_HOME/rtvi/models``, else ``~/.cache/rtvi/models``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rtvi" / "models"


def root(setting: str) -> Path:
    """The cache directory a ``--model-cache`` setting names (empty: the default)."""
    return Path(setting).expanduser() if setting else default_root()


def _torchvision_release() -> str | None:
    try:
        return importlib.metadata.version("torchvision")  # the metadata only: torch is not imported
    except importlib.metadata.PackageNotFoundError:
        return None


def weights_key(weights: str) -> str | None:
    """What the weights are, for the key; None for DEFAULT when torchvision is not installed (any release matches)."""
    choice = weights.lower()
    if choice == "none":
        return "random"
    if choice == "default":
        release = _torchvision_release()
        return f"default-tv{release}" if release else None
    digest = hashlib.sha256()
    try:
        with open(weights, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ModelLoadError(f"cannot read checkpoint {weights!r}: {exc.strerror}") from None
    return f"sha256-{digest.hexdigest()[:16]}"


def entry_name(architecture: str, weights: str) -> str | None:
    key = weights_key(weights)
    return None if key is None else f"{architecture}-{key}-rtvi{__version__}"


def find(architecture: str, weights: str, root: Path) -> Path | None:
    """The cached model directory, if there is one (never imports torch)."""
    name = entry_name(architecture, weights)
    if name is not None:
        return root / name if (root / name).is_dir() else None
    # DEFAULT without torchvision (an image that serves what it baked): the newest release's export.
    found = sorted(root.glob(f"{architecture}-default-tv*-rtvi{__version__}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _writable_root(root: Path) -> Path:
    """``root``, or a private temporary directory (removed at exit) when ``root`` cannot be written."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.mkdtemp(prefix=".probe-", dir=root)
        os.rmdir(probe)
        return root
    except OSError as exc:
        private = Path(tempfile.mkdtemp(prefix="rtvi-models-"))
        atexit.register(shutil.rmtree, private, ignore_errors=True)
        log.warning("model cache %s is not writable (%s): exporting into %s for this process only; every start "
                    "will export again (set --model-cache to a writable directory, or bake it into the image)",
                    root, exc.strerror, private)
        return private


def build(architecture: str, weights: str, root: Path) -> Path:
    """Export ``architecture`` with ``weights`` to an ONNX model directory under ``root``; check it against
    torch; put it in place. Raises ExportError when the export fails or differs from torch."""
    from rtvi.export.config import ExportConfig
    from rtvi.export.run import export

    name = entry_name(architecture, weights)
    assert name is not None, "torchvision is installed when a model is exported"
    root = _writable_root(root)
    target = root / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root)) / name
    log.info("model cache: exporting %s (weights %s) to ONNX into %s, once; later starts load it without torch",
             architecture, weights, target)
    try:
        report = export(ExportConfig(model=architecture, weights=weights, output=str(staging)))
        check = report["export_vs_torch"]
        if check["top1_agreement"] < 1.0 or check["max_abs_logit_delta"] > PARITY_MAX_ABS_DELTA:
            raise ExportError(f"the ONNX export of {architecture} differs from torch on {check['images']} images "
                              f"(top-1 agreement {check['top1_agreement']:.3f}, max |delta logit| "
                              f"{check['max_abs_logit_delta']:.4f})")
        try:
            staging.rename(target)
        except OSError:  # another process put the same export in place first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)
    log.info("model cache: %s ready (export vs torch: max |delta logit| %.2g on %d images)", target,
             check["max_abs_logit_delta"], check["images"])
    return target


def model_directory(architecture: str, weights: str, root: Path) -> Path:
    """The ONNX model directory for a torchvision name: from the cache, exported into it if missing.

    ModelLoadError when the name or the weights are wrong, or when it is not cached and torch
    is not installed to export it; ExportError when the export itself fails.
    """
    cached = find(architecture, weights, root)
    if cached is not None:
        return cached
    if importlib.util.find_spec("torch") is None or _torchvision_release() is None:
        raise ModelLoadError(
            f"{architecture} (weights {weights}) is not in the model cache {root} and torch is not installed to "
            f"export it: bake it where torch is (`rtvi export --model {architecture} --to-cache --model-cache DIR`), "
            "or pass a model directory")
    from rtvi.serving.engines.torch import torchvision_source

    torchvision_source(architecture, weights)  # an unknown name is one line, before any export starts
    return build(architecture, weights, root)
