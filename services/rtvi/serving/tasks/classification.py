"""Image classification: its tensors, labels, top-k and the v2 classification extension.

Inputs are ``images`` (BYTES ``[N]``: encoded JPEG/PNG, decoded by the server) or
``pixels`` (FP32 ``[N,3,H,W]``, already normalized); the output ``logits`` is FP32
``[N, classes]``, or with the ``classification`` parameter (``class_count=k`` in
tritonclient) BYTES ``[N, k]`` strings ``"score:index:label"``, best first, as Triton
returns them.
"""

from __future__ import annotations

import numpy as np

from rtvi.protocol.types import RequestedOutput, Tensor, TensorSpec
from rtvi.serving.errors import InvalidInput

IMAGES = TensorSpec("images", "BYTES", (-1,), "[N] or [N,1]")
PIXELS = TensorSpec("pixels", "FP32", (-1, 3, -1, -1), "[N,3,H,W] with H,W >= 16", min_size=16)
LOGITS = "logits"
CLASSIFICATION_PARAMETER = "classification"


class ClassificationTask:
    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.inputs = (IMAGES, PIXELS)
        self.outputs = (TensorSpec(LOGITS, "FP32", (-1, len(labels))),)

    def respond(self, logits: np.ndarray, requested: list[RequestedOutput]) -> list[Tensor]:
        outputs = []
        for output in requested or [RequestedOutput(LOGITS)]:
            if output.name != LOGITS:
                raise InvalidInput(f"unknown output {output.name!r}; this model produces {LOGITS!r}")
            if output.class_count > 0:
                rows = self.top_k(logits, output.class_count)
                outputs.append(Tensor(LOGITS, "BYTES", (len(rows), len(rows[0])), [s for row in rows for s in row]))
            else:
                outputs.append(Tensor(LOGITS, "FP32", tuple(logits.shape), logits))
        return outputs

    def top_k(self, logits: np.ndarray, k: int) -> list[list[bytes]]:
        """Top-k per row as Triton's ``score:index:label`` strings, best first."""
        top = top_indices(logits, min(k, logits.shape[1]))
        scores = np.take_along_axis(logits, top, axis=1).tolist()  # Python floats format faster than numpy scalars
        return [[f"{score:f}:{i}:{self.labels[i]}".encode() for score, i in zip(row, idx, strict=True)]
                for row, idx in zip(scores, top.tolist(), strict=True)]


def top_indices(logits: np.ndarray, k: int) -> np.ndarray:
    """Each row's indices of its ``k`` largest values, best first, ties to the lower index
    (NaN last): what a stable descending argsort gives, without sorting all the classes.

    A partition finds each row's k-th largest value, and only the values at or above it
    are sorted; the full sort of 1000 classes was a quarter of the event loop's own work.
    """
    negated = -logits
    if k >= logits.shape[1]:
        return np.argsort(negated, axis=1, kind="stable")
    kth = np.partition(negated, k - 1, axis=1)[:, k - 1]
    rows = []
    for row, bound in zip(negated, kth, strict=True):
        candidates = np.flatnonzero(row <= bound)  # ascending indices: a stable sort keeps ties in index order
        if len(candidates) < k:  # the k-th value is NaN: fewer than k numbers in the row
            rows.append(np.argsort(row, kind="stable")[:k])
        else:
            rows.append(candidates[np.argsort(row[candidates], kind="stable")[:k]])
    return np.array(rows, dtype=np.intp).reshape(len(logits), k)
