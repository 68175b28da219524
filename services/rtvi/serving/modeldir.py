"""Model sources: a model directory on disk, or a torchvision architecture name.

A model directory holds exactly one model file, ``labels.txt`` and ``config.yaml``:

    my-model/
      model.onnx | model.pt2 (torch.export) | model.pt (TorchScript)
      labels.txt     one label per line, in output index order
      config.yaml    resize, crop, mean, std (required); input_name, output_name,
                     layout, precision (optional; see README "Model directories")

Everything is checked before a model is loaded; each problem is one ModelLoadError
naming the file and what is wrong, so a bad directory stops the server at start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rtvi.serving.errors import ModelLoadError, first_line

log = logging.getLogger(__name__)

# File name -> format; a directory holds exactly one of them.
MODEL_FILES = {"model.onnx": "onnx", "model.pt2": "torch_export", "model.pt": "torchscript"}
LAYOUTS = ("NCHW", "NHWC")
STORED_PRECISIONS = ("fp32", "fp16", "int8")
REQUIRED_KEYS = ("resize", "crop", "mean", "std")
OPTIONAL_KEYS = ("input_name", "output_name", "layout", "precision")


@dataclass(frozen=True)
class Preprocessing:
    """How images become the model's input: short side to ``resize``, centre ``crop``,
    then ``(pixel / 255 - mean) / std`` per RGB channel, in ``layout``."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layout: str = "NCHW"


@dataclass(frozen=True)
class ModelSource:
    """What to load and how to feed it, before any engine is involved.

    ``format`` is ``torchvision`` (``artifact`` is an architecture name), ``onnx``,
    ``torch_export`` or ``torchscript`` (``artifact`` is the model file).
    """

    format: str
    artifact: str
    labels: tuple[str, ...]
    preprocessing: Preprocessing
    input_name: str = ""
    output_name: str = ""
    stored_precision: str = "fp32"
    weights: str = ""  # torchvision only: DEFAULT, none or a checkpoint path


def is_model_directory(model: str) -> bool:
    return Path(model).is_dir()


def model_file(directory: Path) -> tuple[Path, str]:
    present = [name for name in MODEL_FILES if (directory / name).is_file()]
    if not present:
        raise ModelLoadError(f"{directory}: no model file (expected one of {', '.join(MODEL_FILES)})")
    if len(present) > 1:
        raise ModelLoadError(f"{directory}: holds {' and '.join(present)}; keep exactly one model file")
    return directory / present[0], MODEL_FILES[present[0]]


def read_labels(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing (one label per line, in output index order)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read: {exc}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ModelLoadError(f"{path}: empty (one label per line, in output index order)")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise ModelLoadError(f"{path}: line {number} is empty; every output index needs a label")
    return tuple(line.strip() for line in lines)


def _positive_int(path: Path, config: dict, key: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelLoadError(f"{path}: {key} must be a positive integer, got {value!r}")
    return value


def _triple(path: Path, config: dict, key: str, positive: bool = False) -> tuple[float, float, float]:
    value = config[key]
    ok = isinstance(value, list) and len(value) == 3 and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    )
    if not ok or (positive and min(value) <= 0):
        kind = "three positive numbers" if positive else "three numbers"
        raise ModelLoadError(f"{path}: {key} must be {kind} (RGB, 0..1 pixel scale), got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _choice(path: Path, config: dict, key: str, choices: tuple[str, ...], default: str) -> str:
    value = config.get(key, default)
    if value not in choices:
        raise ModelLoadError(f"{path}: {key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _text(path: Path, config: dict, key: str) -> str:
    value = config.get(key, "")
    if not isinstance(value, str):
        raise ModelLoadError(f"{path}: {key} must be a string, got {value!r}")
    return value


def read_config(path: Path) -> dict:
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing (needs {', '.join(REQUIRED_KEYS)})") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"{path}: not readable YAML: {first_line(exc)}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: must be a mapping of keys ({', '.join(REQUIRED_KEYS)}), got {config!r}")
    for key in REQUIRED_KEYS:
        if key not in config:
            raise ModelLoadError(f"{path}: missing key {key!r} (needs {', '.join(REQUIRED_KEYS)})")
    unknown = sorted(set(config) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        log.warning("%s: ignoring unknown keys %s", path, ", ".join(unknown))
    return config


def load_directory(directory: Path) -> ModelSource:
    """Read and check a model directory (the model file itself is loaded by an engine)."""
    if not directory.is_dir():
        raise ModelLoadError(f"{directory}: not a directory")
    artifact, fmt = model_file(directory)
    labels = read_labels(directory / "labels.txt")
    path = directory / "config.yaml"
    config = read_config(path)
    preprocessing = Preprocessing(
        resize=_positive_int(path, config, "resize"),
        crop=_positive_int(path, config, "crop"),
        mean=_triple(path, config, "mean"),
        std=_triple(path, config, "std", positive=True),
        layout=_choice(path, config, "layout", LAYOUTS, "NCHW"),
    )
    if preprocessing.crop > preprocessing.resize:
        raise ModelLoadError(f"{path}: crop ({preprocessing.crop}) must not exceed resize ({preprocessing.resize})")
    return ModelSource(
        format=fmt,
        artifact=str(artifact),
        labels=labels,
        preprocessing=preprocessing,
        input_name=_text(path, config, "input_name"),
        output_name=_text(path, config, "output_name"),
        stored_precision=_choice(path, config, "precision", STORED_PRECISIONS, "fp32"),
    )


def repository_entries(root: Path) -> dict[str, Path]:
    """Model name -> directory for every sub-directory of a model repository."""
    if not root.is_dir():
        raise ModelLoadError(f"{root}: model repository is not a directory")
    entries = {child.name: child for child in sorted(root.iterdir()) if child.is_dir() and not child.name.startswith(".")}
    if not entries:
        raise ModelLoadError(f"{root}: model repository holds no model directories")
    return entries
