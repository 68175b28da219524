"""The one small interface every engine implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from rtvi.serving.errors import ModelLoadError
from rtvi.serving.modeldir import ModelSource


@dataclass(frozen=True)
class ExecutionPlan:
    """How a model runs, decided once at start (``select.plan``) and reported to clients."""

    engine: str
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32", "bf16", "fp16" or "int8" (an int8 artifact runs as stored)
    instances: int  # batches computed at once, each on its own thread
    threads: int  # intra-op threads per instance
    channels_last: bool = True
    compile: bool = False

    def describe(self) -> str:
        return (f"engine={self.engine} device={self.device} precision={self.precision} "
                f"instances={self.instances} threads={self.threads}")


class Engine(ABC):
    """Loads one model file (or architecture) and runs batches on it.

    ``run`` is called from ``plan.instances`` compute threads at once; an engine keeps
    one runtime object per instance (or a thread-safe shared one).
    """

    name: ClassVar[str]
    platform: ClassVar[str]  # Triton's platform name, reported in metadata

    def __init__(self, source: ModelSource, plan: ExecutionPlan) -> None:
        self.source = source
        self.plan = plan

    @staticmethod
    @abstractmethod
    def cuda_available() -> bool:
        """Whether this engine can run on a CUDA device here."""

    @abstractmethod
    def load(self) -> None:
        """Read the model; raise ModelLoadError naming the file on any failure."""

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Normalized float32 batch (in the source's layout) -> float32 outputs ``[N, classes]``."""


def pick_tensor(path: str, kind: str, names: list[str], configured: str) -> str:
    """The graph input/output to use: the configured name, or the only (first) one."""
    if configured:
        if configured not in names:
            raise ModelLoadError(f"{path}: has no {kind} {configured!r} (config.yaml {kind}_name); it has {names}")
        return configured
    if kind == "input" and len(names) != 1:
        raise ModelLoadError(f"{path}: has inputs {names}; set input_name in config.yaml")
    return names[0]
