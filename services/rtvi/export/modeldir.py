"""Writing the model directory that `rtvi serve --model DIR` reads (rtvi.serving.modeldir).

    model.onnx | model.pt2 | model.pt   exactly one model file
    labels.txt                          one label per line, in output index order
    config.yaml                         resize, crop, mean, std, input_name, output_name, layout, precision
    accuracy.json                       what `rtvi export` measured, and where the model came from

The reader, with its checks, is serving's; this side only writes what it accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtvi.export.errors import ExportError
from rtvi.serving.modeldir import Preprocessing

MODEL_FILES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.pt"}
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelCard:
    """Everything in a model directory except the model file: labels, preprocessing, provenance."""

    labels: tuple[str, ...]
    preprocessing: Preprocessing
    source: str
    precision: str = "fp32"

    def config(self) -> dict[str, Any]:
        p = self.preprocessing
        return {
            "resize": p.resize, "crop": p.crop, "mean": list(p.mean), "std": list(p.std),
            "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "layout": p.layout, "precision": self.precision,
        }


def write_card(directory: Path, card: ModelCard) -> None:
    import yaml

    bad = [label for label in card.labels if not label.strip() or "\n" in label]
    if bad or not card.labels:
        raise ExportError(f"labels must be non-empty single lines; got {len(card.labels)} labels, bad: {bad[:3]}")
    (directory / "labels.txt").write_text("".join(f"{label.strip()}\n" for label in card.labels), encoding="utf-8")
    header = (f"# Written by `rtvi export` from {card.source}.\n"
              "# resize/crop/mean/std: what `rtvi serve` does to each image before the model sees it.\n")
    (directory / "config.yaml").write_text(header + yaml.safe_dump(card.config(), sort_keys=False), encoding="utf-8")
