"""Inference requests and responses without any transport in them.

The gRPC servicer translates protobuf messages to these and back; everything behind
it (routing, validation, batching, tasks) sees only these types, so another
transport (REST, in-process) can reuse the same data plane.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Tensor contents: a numpy array shaped like the tensor, or for BYTES a flat list of items.
TensorData = np.ndarray | list[bytes]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output a model declares: name, datatype, shape (``-1`` = any size).

    The first dimension is the batch. A request may add trailing dimensions of size 1
    (Triton clients send BYTES as ``[N, 1]``). Variable non-batch dimensions must be at
    least ``min_size``.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    shape_text: str = ""
    min_size: int = 1

    def accepts(self, shape: Sequence[int]) -> bool:
        rank = len(self.shape)
        if len(shape) < rank or any(dim != 1 for dim in shape[rank:]):
            return False
        for want, got in zip(self.shape[1:], shape[1:rank], strict=True):
            if (want == -1 and got < self.min_size) or (want != -1 and got != want):
                return False
        return True

    def describe(self) -> str:
        return self.shape_text or "[" + ",".join("N" if i == 0 else str(d) for i, d in enumerate(self.shape)) + "]"


@dataclass(frozen=True)
class Tensor:
    """A request input or a response output with its contents."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: TensorData


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for; ``class_count`` > 0 asks for top-k classification."""

    name: str
    class_count: int = 0


@dataclass(frozen=True)
class InferRequest:
    model_name: str
    inputs: list[Tensor]
    outputs: list[RequestedOutput] = field(default_factory=list)
    model_version: str = ""
    id: str = ""
    size_bytes: int = 0  # the encoded request's size, checked against the server's limit


@dataclass(frozen=True)
class Classification:
    """One class of a top-k answer (the v2 classification extension's ``score:index:label``)."""

    label: str
    index: int
    score: float


def parse_classification(entry: bytes) -> Classification:
    score, index, label = entry.decode().split(":", 2)
    return Classification(label=label, index=int(index), score=float(score))


@dataclass(frozen=True)
class InferResponse:
    model_name: str
    outputs: list[Tensor]
    model_version: str = "1"
    id: str = ""
