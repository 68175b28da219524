"""Where the model to export comes from: a torchvision name, a factory, or a model directory.

Each source yields the same thing, an eval-mode torch module (or, for a directory that
already holds ONNX, that file) plus the labels and preprocessing that go with it, so the
writers and the quantizer never care where a model came from. Torchvision names and
model directories are read by serving's own code (rtvi.serving.modeldir and the torch
engine), so `rtvi export` accepts exactly what `rtvi serve` accepts.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rtvi.export.config import ExportConfig, parse_floats
from rtvi.export.errors import ExportError
from rtvi.export.modeldir import IMAGENET_MEAN, IMAGENET_STD, ModelCard
from rtvi.serving.errors import first_line
from rtvi.serving.modeldir import Preprocessing, load_directory

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Source:
    card: ModelCard
    module: torch.nn.Module | None = None
    onnx_path: Path | None = None


def imagenet_labels() -> tuple[str, ...]:
    """The ImageNet-1k class names in index order, from torchvision's weight metadata (no download)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _preprocessing(config: ExportConfig, base: Preprocessing) -> Preprocessing:
    """Flags override what the source says."""
    mean = parse_floats(config.mean, 3, "--mean") if config.mean else base.mean
    std = parse_floats(config.std, 3, "--std") if config.std else base.std
    return Preprocessing(config.resize or base.resize, config.crop or base.crop, mean, std, base.layout)  # type: ignore[arg-type]


def _from_torchvision(config: ExportConfig) -> Source:
    from rtvi.serving.engines.torch import torchvision_module, torchvision_source

    served = torchvision_source(config.model, config.weights)
    module = torchvision_module(config.model, config.weights)
    card = ModelCard(served.labels, _preprocessing(config, served.preprocessing),
                     source=f"torchvision {config.model} (weights {config.weights})")
    return Source(card, module=module.eval())


def _labels(spec: str) -> tuple[str, ...]:
    if spec.lower() == "imagenet":
        return imagenet_labels()
    try:
        labels = tuple(line.strip() for line in Path(spec).read_text(encoding="utf-8").splitlines() if line.strip())
    except OSError as exc:
        raise ExportError(f"--labels {spec}: {exc.strerror}") from None
    if not labels:
        raise ExportError(f"--labels {spec}: the file holds no labels")
    return labels


def _load_checkpoint(module: torch.nn.Module, path: str) -> None:
    from rtvi.serving.engines.torch import load_state_dict_file

    try:
        module.load_state_dict(load_state_dict_file(path))
    except RuntimeError as exc:  # shape or key mismatch
        raise ExportError(f"--weights {path} does not fit the factory's model: {first_line(exc)}") from None


def _from_factory(config: ExportConfig) -> Source:
    import torch

    module_name, _, attr = config.from_module.partition(":")
    # Like `python -m`, let a factory in the current directory be found.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ExportError(f"--from-module {config.from_module}: {exc}") from None
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"--from-module {config.from_module} returned {type(module).__name__}, not a torch.nn.Module")
    if config.weights.lower() == "none":
        raise ExportError("--weights none does not apply to --from-module: the factory builds the weights")
    if config.weights.lower() != "default":
        _load_checkpoint(module, config.weights)
    base = Preprocessing(256, 224, IMAGENET_MEAN, IMAGENET_STD)
    card = ModelCard(_labels(config.labels), _preprocessing(config, base), source=f"factory {config.from_module}")
    return Source(card, module=module.eval())


def _from_directory(config: ExportConfig, directory: Path) -> Source:
    served = load_directory(directory)
    if served.stored_precision != "fp32":
        raise ExportError(f"{directory} holds a {served.stored_precision} model; export from an fp32 one")
    if served.preprocessing.layout != "NCHW":
        raise ExportError(f"{directory}: layout {served.preprocessing.layout}; rtvi export handles NCHW models")
    card = ModelCard(served.labels, _preprocessing(config, served.preprocessing), source=f"model directory {directory}")
    if served.format == "onnx":
        return Source(card, onnx_path=Path(served.artifact))
    from rtvi.serving.engines.torch import file_module

    return Source(card, module=file_module(served))


def load_source(config: ExportConfig) -> Source:
    if bool(config.model) == bool(config.from_module):
        raise ExportError("give exactly one of --model NAME|DIR and --from-module MODULE:FACTORY")
    if config.from_module:
        return _from_factory(config)
    directory = Path(config.model)
    if directory.is_dir():
        return _from_directory(config, directory)
    if os.sep in config.model or directory.suffix:
        raise ExportError(f"--model {config.model}: no such model directory")
    return _from_torchvision(config)
