"""The check set a model directory carries: held-out inputs and their fp32 answers.

`rtvi export` measures a model on the machine that exports it; the machine that serves it
may compute differently (int8 without VNNI saturates where it did not at export; bf16
rounds where fp32 did not). So the directory keeps a few dozen held-out images, as the
uint8 RGB crops the server's own decode, resize and crop made of them, with the fp32
model's logits for each and the minimum top-1 agreement the export demanded. At load,
`rtvi serve` runs the crops through the engine and CPU that will serve (and the same
normalization as every request) and compares.

``checkset.npz`` arrays: ``crops`` uint8 [N, crop, crop, 3], ``logits`` float32
[N, classes], ``min_agreement`` float64 scalar. Read without pickle.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtvi.serving.errors import ModelLoadError

CHECKSET_FILE = "checkset.npz"


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float | int]:
    """Top-1 agreement and logit deltas of ``candidate`` against ``reference`` (both [N, classes])."""
    delta = np.abs(reference.astype(np.float64) - candidate)
    return {
        "images": int(len(reference)),
        "top1_agreement": float((reference.argmax(1) == candidate.argmax(1)).mean()),
        "max_abs_logit_delta": float(delta.max()),
        "mean_abs_logit_delta": float(delta.mean()),
    }


@dataclass(frozen=True)
class CheckSet:
    crops: np.ndarray
    logits: np.ndarray
    min_agreement: float

    def save(self, directory: Path) -> None:
        np.savez_compressed(directory / CHECKSET_FILE, crops=self.crops, logits=self.logits.astype(np.float32),
                            min_agreement=np.float64(self.min_agreement))


@dataclass(frozen=True)
class CheckResult:
    """How the serving engine answered the check set; ``passed`` at or above the directory's minimum."""

    images: int
    agreement: float
    max_abs_logit_delta: float
    min_agreement: float

    @property
    def passed(self) -> bool:
        return self.agreement >= self.min_agreement

    def describe(self) -> str:
        return (f"top-1 agreement with fp32 {self.agreement:.3f} on {self.images} check-set images "
                f"(minimum {self.min_agreement:g}), max |delta logit| {self.max_abs_logit_delta:.2f}")


def evaluate(checkset: CheckSet, logits: np.ndarray) -> CheckResult:
    found = compare(checkset.logits, logits)
    return CheckResult(found["images"], found["top1_agreement"], found["max_abs_logit_delta"], checkset.min_agreement)


def load_checkset(directory: Path, crop: int, classes: int) -> CheckSet | None:
    """The directory's check set, or None when it has none; a malformed one is a ModelLoadError."""
    path = directory / CHECKSET_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            crops, logits, minimum = data["crops"], data["logits"], float(data["min_agreement"])
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"{path}: not a check set (crops, logits, min_agreement): {exc}") from None
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (crop, crop, 3) or not len(crops):
        raise ModelLoadError(f"{path}: crops must be uint8 [N, {crop}, {crop}, 3], got {crops.dtype} {list(crops.shape)}")
    if logits.shape != (len(crops), classes):
        raise ModelLoadError(f"{path}: logits must be [{len(crops)}, {classes}] (one row per crop, one column per "
                             f"label), got {list(logits.shape)}")
    if not 0.0 <= minimum <= 1.0:
        raise ModelLoadError(f"{path}: min_agreement must be within 0..1, got {minimum}")
    return CheckSet(crops, logits, minimum)
