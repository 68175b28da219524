"""Where the model to export comes from: a torchvision name, a factory, or a model directory.

Each source yields the same thing, an eval-mode torch module (or, for a directory that
already holds ONNX, that file) plus the labels and preprocessing that go with it, so the
writers and the quantizer never care where a model came from.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rtvi.export.config import ExportConfig, parse_floats
from rtvi.export.errors import ExportError
from rtvi.export.modeldir import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelCard,
    Preprocessing,
    model_file,
    read_card,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    card: ModelCard
    module: torch.nn.Module | None = None
    onnx_path: Path | None = None


def imagenet_labels() -> tuple[str, ...]:
    """The ImageNet-1k class names in index order, from torchvision's weight metadata (no download)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _load_state_dict(module: torch.nn.Module, path: str) -> None:
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ExportError(f"cannot read checkpoint {path!r}: {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, dict):
        raise ExportError(f"checkpoint {path!r} holds no state dict")
    try:
        module.load_state_dict(checkpoint)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ExportError(f"checkpoint {path!r} does not fit the model: {first}") from None


def _preprocessing(config: ExportConfig, base: Preprocessing) -> Preprocessing:
    """Flags override what the source says."""
    mean = parse_floats(config.mean, 3, "--mean") if config.mean else base.mean
    std = parse_floats(config.std, 3, "--std") if config.std else base.std
    return Preprocessing(config.resize or base.resize, config.crop or base.crop, mean, std)  # type: ignore[arg-type]


def _from_torchvision(config: ExportConfig) -> Source:
    import torch
    import torchvision
    from torchvision.models import get_model, get_model_weights, list_models

    names = list_models(module=torchvision.models)
    if config.model not in names:
        raise ExportError(f"{config.model!r} is neither a model directory nor a torchvision classification model "
                          f"(known: {', '.join(names[:10])}, ...)")
    default = get_model_weights(config.model).DEFAULT
    module = get_model(config.model, weights=None)
    choice = config.weights.lower()
    if choice == "default":
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(default.url))
        if not os.path.exists(path):
            raise ExportError(f"pretrained weights for {config.model} are not in the torch hub cache ({path}); "
                              "rtvi export never downloads: set TORCH_HOME, pass --weights PATH, or --weights none")
        _load_state_dict(module, path)
    elif choice == "none":
        log.warning("--weights none: %s is exported with RANDOM weights; its labels are meaningless", config.model)
    else:
        _load_state_dict(module, config.weights)
    transforms = default.transforms()
    base = Preprocessing(int(transforms.resize_size[0]), int(transforms.crop_size[0]),
                         tuple(transforms.mean), tuple(transforms.std))  # type: ignore[arg-type]
    card = ModelCard(tuple(default.meta["categories"]), _preprocessing(config, base),
                     source=f"torchvision {config.model}, weights {config.weights}")
    return Source(card, module=module.eval())


def _labels(spec: str) -> tuple[str, ...]:
    if spec.lower() == "imagenet":
        return imagenet_labels()
    try:
        labels = tuple(line.strip() for line in Path(spec).read_text().splitlines() if line.strip())
    except OSError as exc:
        raise ExportError(f"--labels {spec}: {exc.strerror}") from None
    if not labels:
        raise ExportError(f"--labels {spec}: the file holds no labels")
    return labels


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
        _load_state_dict(module, config.weights)
    base = Preprocessing(256, 224, IMAGENET_MEAN, IMAGENET_STD)
    card = ModelCard(_labels(config.labels), _preprocessing(config, base), source=f"factory {config.from_module}")
    return Source(card, module=module.eval())


def _from_directory(config: ExportConfig, directory: Path) -> Source:
    import torch

    path = model_file(directory)
    card = read_card(directory)
    card = ModelCard(card.labels, _preprocessing(config, card.preprocessing), source=f"{card.source}, via {directory}",
                     precision=card.precision, extra=card.extra)
    if card.precision != "fp32":
        raise ExportError(f"{directory} holds a {card.precision} model; export from an fp32 one")
    if path.suffix == ".onnx":
        return Source(card, onnx_path=path)
    try:
        module = torch.export.load(path).module() if path.suffix == ".pt2" else torch.jit.load(path, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a corrupt file
        raise ExportError(f"{path}: cannot load ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return Source(card, module=module)


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
