"""The model directory `rtvi export` writes and `rtvi serve --model DIR` reads.

    model.onnx | model.pt2 | model.pt   exactly one model file
    labels.txt                          one label per line, in output index order
    config.yaml                         preprocessing, and how the model file was made
    accuracy.json                       what `rtvi export` measured (informational)

config.yaml keys: ``resize`` and ``crop`` (ints: short side before the centre crop, and
the crop, i.e. the model's input height and width), ``mean`` and ``std`` (three floats
each, RGB, 0..1 pixel scale); written for people and tools, not required by serving:
``input`` (the model's input name, ``pixels``: float32 [N, 3, crop, crop], normalized),
``output`` (``logits``: float32 [N, classes]), ``layout`` (``NCHW``), ``precision``
(``fp32`` or ``int8``) and ``source`` (what it was exported from).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtvi.export.errors import ExportError

MODEL_FILES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.pt"}
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelDirError(ExportError):
    """A model directory cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class Preprocessing:
    """What serving does to an image before the model sees it (rtvi.serving.preprocess + normalization)."""

    resize: int
    crop: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass(frozen=True)
class ModelCard:
    """Everything in a model directory except the model file itself."""

    labels: tuple[str, ...]
    preprocessing: Preprocessing
    source: str
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        p = self.preprocessing
        return {
            "resize": p.resize, "crop": p.crop, "mean": list(p.mean), "std": list(p.std),
            "input": INPUT_NAME, "output": OUTPUT_NAME, "layout": "NCHW",
            "precision": self.precision, "source": self.source, **self.extra,
        }


def write_card(directory: Path, card: ModelCard) -> None:
    import yaml

    bad = [label for label in card.labels if not label.strip() or "\n" in label]
    if bad or not card.labels:
        raise ModelDirError(f"labels must be non-empty single lines; got {len(card.labels)} labels, bad: {bad[:3]}")
    (directory / "labels.txt").write_text("".join(f"{label}\n" for label in card.labels))
    header = "# Written by `rtvi export`. resize/crop/mean/std: what `rtvi serve` does to each image.\n"
    (directory / "config.yaml").write_text(header + yaml.safe_dump(card.config(), sort_keys=False))


def model_file(directory: Path) -> Path:
    """The one model file in ``directory``."""
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: no such model directory")
    found = [directory / name for name in MODEL_FILES.values() if (directory / name).is_file()]
    if len(found) != 1:
        names = " | ".join(MODEL_FILES.values())
        raise ModelDirError(f"{directory}: expected exactly one of {names}, found {[p.name for p in found] or 'none'}")
    return found[0]


def read_card(directory: Path) -> ModelCard:
    import yaml

    labels_path, config_path = directory / "labels.txt", directory / "config.yaml"
    try:
        labels = tuple(line.strip() for line in labels_path.read_text().splitlines() if line.strip())
        config = yaml.safe_load(config_path.read_text())
    except OSError as exc:
        raise ModelDirError(f"{exc.filename}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ModelDirError(f"{config_path}: not valid YAML: {exc}") from None
    if not labels:
        raise ModelDirError(f"{labels_path}: no labels")
    if not isinstance(config, dict):
        raise ModelDirError(f"{config_path}: expected a mapping with resize, crop, mean and std")
    missing = [key for key in ("resize", "crop", "mean", "std") if key not in config]
    if missing:
        raise ModelDirError(f"{config_path}: missing key(s) {', '.join(missing)}")
    try:
        preprocessing = Preprocessing(int(config["resize"]), int(config["crop"]),
                                      _three(config["mean"]), _three(config["std"]))
    except (TypeError, ValueError) as exc:
        raise ModelDirError(f"{config_path}: {exc}") from None
    known = {"resize", "crop", "mean", "std", "input", "output", "layout", "precision", "source"}
    return ModelCard(labels, preprocessing, source=str(config.get("source", directory)),
                     precision=str(config.get("precision", "fp32")),
                     extra={k: v for k, v in config.items() if k not in known})


def _three(value: Any) -> tuple[float, float, float]:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(f"mean and std must be lists of three numbers, got {value!r}")
    a, b, c = (float(v) for v in value)
    return a, b, c
