"""The one typed configuration of `rtvi export`.

It extends KafkaConfig because int8 calibration can read frames from a topic with the
same connection settings (security, SASL, frame size) as the consumer.
"""

from __future__ import annotations

from dataclasses import dataclass

from rtvi.settings import require, setting
from rtvi.streaming.kafka_config import KafkaConfig

FORMATS = ("onnx", "torchscript", "pt2")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
INT8_RECIPES = ("reduce-range", "u8s8", "s8s8")
FP32_LAYERS = ("none", "last", "first-last")


def parse_floats(text: str, count: int, what: str) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` -> three floats, or a ConfigError naming the flag."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    require(len(values) == count, f"{what} must be {count} comma-separated numbers, got {text!r}")
    return values


@dataclass(frozen=True)
class ExportConfig(KafkaConfig):
    output: str = setting("", "model directory to write (must not exist or be empty, unless --overwrite)", metavar="DIR")
    to_cache: bool = setting(
        False, "instead of --output: export the torchvision --model into --model-cache, where `rtvi serve --model "
        "NAME` finds it and serves it without torch (images bake it at build time)",
    )
    model_cache: str = setting(
        "", "the directory of torchvision names exported to ONNX, shared with `rtvi serve`; empty = "
        "$XDG_CACHE_HOME/rtvi/models or ~/.cache/rtvi/models", metavar="DIR",
    )
    model: str = setting(
        "",
        "what to export: a torchvision classification architecture (resnet18, efficientnet_b0, ...) "
        "or an existing model directory (model.onnx | model.pt2 | model.pt with labels.txt and config.yaml)",
        metavar="NAME|DIR",
    )
    from_module: str = setting(
        "",
        "instead of --model: 'package.module:factory', a callable returning a torch.nn.Module "
        "(the current directory is importable); use with --labels and the geometry flags",
        metavar="MODULE:FACTORY",
    )
    weights: str = setting(
        "DEFAULT",
        "DEFAULT (torchvision's pretrained weights from the torch hub cache, or the factory's own), "
        "none (random init: meaningless labels), or a checkpoint path (state dict)",
    )
    labels: str = setting(
        "", "labels for --from-module: a text file (one label per line, output index order) or 'imagenet' "
        "(the 1000 ImageNet-1k classes torchvision ships)", metavar="FILE|imagenet",
    )
    resize: int = setting(0, "short side the image is resized to before cropping; 0 = from the source (256 for --from-module)")
    crop: int = setting(0, "centre crop size, the model's input height and width; 0 = from the source (224 for --from-module)")
    mean: str = setting("", "per-channel RGB mean on the 0..1 scale, e.g. 0.485,0.456,0.406; empty = from the source (ImageNet for --from-module)")
    std: str = setting("", "per-channel RGB std on the 0..1 scale, e.g. 0.229,0.224,0.225; empty = from the source (ImageNet for --from-module)")
    format: str = setting(
        "onnx", "model file to write: onnx (model.onnx, fp32 or int8), torchscript (model.pt) or pt2 "
        "(model.pt2, torch.export)", choices=FORMATS,
    )
    int8: bool = setting(
        False, "statically quantize the ONNX model to int8 (QDQ, per-channel weights), calibrated on "
        "--calibration-images or --calibration-topic through rtvi's own decode/resize/crop",
    )
    calibration_images: str = setting("", "folder of JPEG/PNG images for int8 calibration and the accuracy report", metavar="DIR")
    calibration_topic: str = setting("", "Kafka topic of rtvi frames (JPEG records) for int8 calibration, instead of a folder")
    calibration_frames: int = setting(300, "at most this many images or frames are read for calibration and the report")
    holdout_every: int = setting(
        5, "every Nth calibration image is held out of calibration and used only for the accuracy report",
    )
    int8_recipe: str = setting(
        "reduce-range", "reduce-range: uint8 activations, int8 weights limited to 7 bits, accurate on every x86 CPU "
        "(CPUs without VNNI saturate full 8-bit weights); u8s8: full 8-bit weights, accurate only where the serving "
        "CPU has VNNI; s8s8: int8 activations too (see README for the measurements)", choices=INT8_RECIPES)
    calibration_method: str = setting("minmax", "how activation ranges are chosen from calibration data", choices=CALIBRATION_METHODS)
    fp32_layers: str = setting(
        "last", "layers kept in fp32 in the int8 model: none, last (the layer producing the logits: "
        "negligible compute, keeps logits close), or first-last (also the first layer, which sees raw pixels)",
        choices=FP32_LAYERS,
    )
    min_agreement: float = setting(
        0.98, "int8 export fails (exit 1, model directory not written) when its top-1 agreement with fp32 "
        "on the held-out images is below this",
    )
    check_set_size: int = setting(
        32, "held-out images (at most) the model directory keeps as its check set, with their fp32 logits: "
        "`rtvi serve` measures the agreement on its own engine and CPU at load",
    )
    batch_size: int = setting(8, "images per batch during calibration and the accuracy report")
    overwrite: bool = setting(False, "replace an existing, non-empty output directory")
    fetch_timeout_s: float = setting(60.0, "how long to wait for --calibration-frames frames from the topic")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(bool(self.output) != self.to_cache, "give exactly one of --output DIR and --to-cache")
        require(not self.to_cache or (bool(self.model) and not self.int8 and self.format == "onnx"),
                "--to-cache exports a torchvision --model NAME to ONNX fp32 (no --int8, --format onnx)")
        require(not self.from_module or ":" in self.from_module,
                f"--from-module must look like package.module:factory, got {self.from_module!r}")
        require(not self.from_module or bool(self.labels), "--from-module needs --labels FILE (or --labels imagenet)")
        require(self.resize >= 0 and self.crop >= 0, "resize and crop must be >= 0")
        if self.mean:
            parse_floats(self.mean, 3, "--mean")
        if self.std:
            require(all(v > 0 for v in parse_floats(self.std, 3, "--std")), "--std values must be > 0")
        require(not self.int8 or self.format == "onnx", "--int8 writes an ONNX model: use --format onnx")
        if self.int8:
            require(bool(self.calibration_images) != bool(self.calibration_topic),
                    "--int8 needs exactly one of --calibration-images DIR and --calibration-topic TOPIC")
        require(self.calibration_frames >= 2, "calibration frames must be >= 2 (some are held out)")
        require(self.holdout_every >= 2, "holdout every must be >= 2")
        require(0.0 <= self.min_agreement <= 1.0, "min agreement must be within 0..1")
        require(self.batch_size >= 1, "batch size must be >= 1")
        require(self.check_set_size >= 1, "check set size must be >= 1")
        require(self.fetch_timeout_s > 0, "fetch timeout must be > 0")
