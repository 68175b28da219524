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
        k = min(k, logits.shape[1])
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        return [[f"{row[i]:f}:{i}:{self.labels[i]}".encode() for i in idx] for row, idx in zip(logits, top, strict=True)]
