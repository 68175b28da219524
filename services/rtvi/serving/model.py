"""A torchvision image classifier: load, preprocess a batch, predict.

Mirrors KServe's Model (load / preprocess / predict) for one architecture. Every
method here runs on a compute thread (one per model instance, sharing the weights:
forward passes under inference_mode do not mutate the module); the event loop never
calls torch.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass

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

from rtvi.serving.config import ServerConfig
from rtvi.serving.preprocess import ImageGeometry

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The configured model cannot be loaded; the message says what to change."""


@dataclass(frozen=True)
class ModelSpec:
    """What clients see of the model: its labels and input geometry."""

    labels: tuple[str, ...]
    geometry: ImageGeometry
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def classification_models() -> list[str]:
    return list_models(module=torchvision.models)


def _cached_weights_path(weights: torchvision.models.WeightsEnum) -> str:
    filename = os.path.basename(weights.url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def pretrained_weights_cached(architecture: str) -> bool:
    """Whether DEFAULT weights for ``architecture`` are in the torch hub cache (nothing is downloaded)."""
    return os.path.exists(_cached_weights_path(get_model_weights(architecture).DEFAULT))


def _load_state_dict(path: str) -> dict:
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


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for but torch sees no CUDA device")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class ImageClassifier:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ModelLoadError("precision fp16 needs CUDA; use bf16 on CPU")
        self.spec: ModelSpec | None = None
        self._model: torch.nn.Module | None = None

    def load(self) -> ModelSpec:
        cfg = self.config
        if cfg.model not in classification_models():
            known = ", ".join(classification_models()[:12])
            raise ModelLoadError(f"unknown torchvision classification model {cfg.model!r} (known: {known}, ...)")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        default_weights = get_model_weights(cfg.model).DEFAULT
        model = get_model(cfg.model, weights=None)
        choice = cfg.weights.lower()
        if choice == "default":
            path = _cached_weights_path(default_weights)
            if not pretrained_weights_cached(cfg.model):
                raise ModelLoadError(
                    f"pretrained weights for {cfg.model} are not in the torch hub cache ({path}); "
                    "rtvi serve never downloads at run time: bake them into the image "
                    "(Dockerfile.inference does), set TORCH_HOME, or pass --weights none "
                    "for random weights"
                )
            model.load_state_dict(_load_state_dict(path))
        elif choice == "none":
            log.warning("weights=none: %s runs with RANDOM weights; labels are meaningless", cfg.model)
        else:
            try:
                model.load_state_dict(_load_state_dict(cfg.weights))
            except RuntimeError as exc:  # shape or key mismatch
                raise ModelLoadError(f"checkpoint {cfg.weights!r} does not fit {cfg.model}: {exc}") from exc
        model.eval().to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.compile:
            model = torch.compile(model)
        self._model = model
        transforms = default_weights.transforms()
        self.spec = ModelSpec(
            labels=tuple(default_weights.meta["categories"]),
            geometry=ImageGeometry(
                resize=int(transforms.resize_size[0]),
                crop=int(transforms.crop_size[0]),
                fast_decode=cfg.fast_decode,
                max_pixels=cfg.max_image_pixels,
            ),
            mean=tuple(transforms.mean),
            std=tuple(transforms.std),
        )
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1) * 255
        return self.spec

    def _autocast(self):
        precision = self.config.precision
        if precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 RGB crops to a normalized float batch.

        The NHWC array viewed as NCHW already has channels_last strides, so the
        conversion copies once and keeps the layout the convolutions want.
        """
        batch = torch.from_numpy(images).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        return (batch.float() - self._mean) / self._std

    @torch.inference_mode()
    def predict(self, batch: torch.Tensor) -> np.ndarray:
        """Logits as float32 (N, classes)."""
        assert self._model is not None, "load() first"
        batch = batch.to(self.device)
        if self.config.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            logits = self._model(batch)
        return logits.float().cpu().numpy()

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.predict(self.preprocess(images))

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.predict(torch.from_numpy(pixels))

    def warmup(self, batch_sizes: tuple[int, ...]) -> None:
        """Run each batch size once so the first real request is not slow."""
        assert self.spec is not None
        crop = self.spec.geometry.crop
        for n in batch_sizes:
            self.predict_images(np.zeros((n, crop, crop, 3), dtype=np.uint8))
