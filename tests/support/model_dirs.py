"""Model directories built in the test from torchvision architectures with seeded random weights.

Nothing is downloaded: ``weights=None`` and a fixed seed make each model reproducible,
so a test can compare what the server returns with the same module run in torch.
"""

from __future__ import annotations

from pathlib import Path

import torch

IMAGENET_CONFIG = "resize: 256\ncrop: 224\nmean: [0.485, 0.456, 0.406]\nstd: [0.229, 0.224, 0.225]\n"


def seeded(architecture: str, num_classes: int, seed: int = 1234) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.get_model(architecture, weights=None, num_classes=num_classes).eval()


def write_dir(directory: Path, labels: list[str], config: str = IMAGENET_CONFIG) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
    (directory / "config.yaml").write_text(config)
    return directory


def export_onnx(module: torch.nn.Module, path: Path, size: int = 224) -> None:
    """ONNX with a dynamic batch axis (the TorchScript-based exporter: one self-contained file)."""
    torch.onnx.export(
        module, (torch.zeros(1, 3, size, size),), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
    )


def export_torchscript(module: torch.nn.Module, path: Path, size: int = 224) -> None:
    with torch.inference_mode():
        torch.jit.trace(module, torch.zeros(2, 3, size, size)).save(str(path))


def export_program(module: torch.nn.Module, path: Path, size: int = 224) -> None:
    """A torch.export program with a dynamic batch dimension."""
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(module, (torch.zeros(2, 3, size, size),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


class SmallNet(torch.nn.Module):
    """A conv net small enough to export and quantize in a second or two, with logits far enough
    apart that int8 keeps fp32's top-1 (a random torchvision net's logits are near ties)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        )
        self.head = torch.nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def labels(count: int, prefix: str = "class") -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]
