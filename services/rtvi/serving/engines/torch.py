"""The torch engine: torchvision architectures, TorchScript and torch.export programs.

Eager by default, ``torch.compile`` on request; bf16/fp16 through autocast; convolutions
in channels_last. Instances share one module: forward passes under inference_mode do
not mutate it.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext

import numpy as np

# Torch's OpenMP workers spin-wait between parallel regions by default, taking the
# cores from the threads that decode the next batch. Measured on 2 cores
# (benchmarks/bench_server.py): OMP_WAIT_POLICY=ACTIVE gave 42% of the model-only
# ceiling, PASSIVE 100%. Set before torch loads its OpenMP runtime; an explicit
# setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torchvision  # noqa: E402
from torchvision.models import get_model, get_model_weights, list_models  # noqa: E402

from rtvi.serving.engines.base import Engine, ExecutionPlan  # noqa: E402
from rtvi.serving.errors import ModelLoadError, first_line  # noqa: E402
from rtvi.serving.modeldir import ModelSource, Preprocessing  # noqa: E402

log = logging.getLogger(__name__)

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def classification_models() -> list[str]:
    return list_models(module=torchvision.models)


def _cached_weights_path(weights: torchvision.models.WeightsEnum) -> str:
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def pretrained_weights_cached(architecture: str) -> bool:
    """Whether DEFAULT weights for ``architecture`` are in the torch hub cache (nothing is downloaded)."""
    return os.path.exists(_cached_weights_path(get_model_weights(architecture).DEFAULT))


def torchvision_source(architecture: str, weights: str) -> ModelSource:
    """Labels and preprocessing of a torchvision architecture, from its weights' metadata."""
    if architecture not in classification_models():
        known = ", ".join(classification_models()[:12])
        raise ModelLoadError(f"unknown torchvision classification model {architecture!r} (known: {known}, ...)")
    default = get_model_weights(architecture).DEFAULT
    transforms = default.transforms()
    return ModelSource(
        format="torchvision",
        artifact=architecture,
        labels=tuple(default.meta["categories"]),
        preprocessing=Preprocessing(
            resize=int(transforms.resize_size[0]), crop=int(transforms.crop_size[0]),
            mean=tuple(transforms.mean), std=tuple(transforms.std),
        ),
        weights=weights,
    )


def load_state_dict_file(path: str) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"cannot read checkpoint {path!r}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, dict):
        raise ModelLoadError(f"checkpoint {path!r} holds no state dict")
    return checkpoint


def torchvision_module(architecture: str, weights: str) -> torch.nn.Module:
    model = get_model(architecture, weights=None)
    choice = weights.lower()
    if choice == "default":
        path = _cached_weights_path(get_model_weights(architecture).DEFAULT)
        if not pretrained_weights_cached(architecture):
            raise ModelLoadError(
                f"pretrained weights for {architecture} are not in the torch hub cache ({path}); "
                "rtvi serve never downloads at run time: bake them into the image "
                "(Dockerfile.inference does), set TORCH_HOME, or pass --weights none "
                "for random weights"
            )
        model.load_state_dict(load_state_dict_file(path))
    elif choice == "none":
        log.warning("weights=none: %s runs with RANDOM weights; labels are meaningless", architecture)
    else:
        try:
            model.load_state_dict(load_state_dict_file(weights))
        except RuntimeError as exc:  # shape or key mismatch
            raise ModelLoadError(f"checkpoint {weights!r} does not fit {architecture}: {exc}") from exc
    return model


def file_module(source: ModelSource) -> torch.nn.Module:
    path = source.artifact
    try:
        if source.format == "torchscript":
            return torch.jit.load(path, map_location="cpu")
        return torch.export.load(path).module()
    except Exception as exc:  # corrupt or foreign file: torch raises many types
        kind = "TorchScript" if source.format == "torchscript" else "torch.export"
        raise ModelLoadError(f"{path}: cannot load as a {kind} model: {first_line(exc)}") from None


class TorchEngine(Engine):
    name = "torch"
    platform = "pytorch_libtorch"

    def __init__(self, source: ModelSource, plan: ExecutionPlan) -> None:
        super().__init__(source, plan)
        self._device = torch.device(plan.device)
        self._module: torch.nn.Module | None = None

    @staticmethod
    def cuda_available() -> bool:
        return torch.cuda.is_available()

    def load(self) -> None:
        torch.set_num_threads(self.plan.threads)
        if self.source.format == "torchvision":
            module = torchvision_module(self.source.artifact, self.source.weights)
        else:
            module = file_module(self.source)
        if self.source.format != "torch_export":  # an exported program is already in eval mode and refuses eval()
            module = module.eval()
        module = module.to(self._device)
        if self.plan.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if self.plan.compile and self.source.format == "torchscript":
            log.warning("%s: --compile ignored: a TorchScript module runs on the TorchScript interpreter",
                        self.source.artifact)
        elif self.plan.compile:
            module = torch.compile(module)
        self._module = module

    def _autocast(self):
        dtype = _AUTOCAST.get(self.plan.precision)
        return nullcontext() if dtype is None else torch.autocast(device_type=self._device.type, dtype=dtype)

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> np.ndarray:
        assert self._module is not None, "load() first"
        inputs = torch.from_numpy(batch).to(self._device, non_blocking=True)
        if self.plan.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            outputs = self._module(inputs)
        return outputs.float().cpu().numpy()
