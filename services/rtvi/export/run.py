"""`rtvi export`: write a model directory, measure it, and only then put it in place.

The directory is built next to its destination and renamed into place at the end, so a
failed or interrupted export never leaves a half-written model where `rtvi serve` could
pick it up. An int8 model whose top-1 agreement with fp32 falls below
``--min-agreement`` is moved to ``<output>.rejected`` with its report, for inspection.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rtvi.export.config import ExportConfig
from rtvi.errors import ExitCode
from rtvi.export.errors import AccuracyGateFailed, ExportError
from rtvi.export.modeldir import MODEL_FILES, ModelCard, write_card
from rtvi.export.sources import Source, load_source
from rtvi.serving.checkset import CHECKSET_FILE, CheckSet, compare
from rtvi.serving.hardware import cpu_record
from rtvi.serving.modeldir import Preprocessing

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

REPORT_FILE = "accuracy.json"
# A random batch checks the exported file against torch when no real images are given.
_PARITY_BATCH = 4


def _prepare_output(output: Path, overwrite: bool) -> Path:
    if output.exists() and not output.is_dir():
        raise ExportError(f"--output {output}: exists and is not a directory")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ExportError(f"--output {output}: directory is not empty (pass --overwrite to replace it)")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from a server running as another user
        return staging
    except OSError as exc:
        raise ExportError(f"--output {output}: {exc.strerror}") from None


def _replace(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    src.rename(dst)


def _torch_logits(module: torch.nn.Module, batch: np.ndarray, batch_size: int) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([module(torch.from_numpy(batch[i : i + batch_size])).float().numpy()
                               for i in range(0, len(batch), batch_size)])


def _reload(path: Path):
    import torch

    return torch.export.load(path).module() if path.suffix == ".pt2" else torch.jit.load(path, map_location="cpu")


def _written_logits(path: Path, batch: np.ndarray, batch_size: int) -> np.ndarray:
    from rtvi.export.quantize import run_onnx

    if path.suffix == ".onnx":
        return run_onnx(path, batch, batch_size)
    return _torch_logits(_reload(path), batch, batch_size)


def _parity_batch(preprocessing: Preprocessing) -> np.ndarray:
    from rtvi.serving.normalize import Normalizer

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (_PARITY_BATCH, preprocessing.crop, preprocessing.crop, 3), dtype=np.uint8)
    return Normalizer(preprocessing).images(crops)


def _write_model(source: Source, config: ExportConfig, staging: Path, scratch: Path) -> Path:
    """The fp32 model file: ``staging/model.*`` for a plain export, ``scratch/fp32.onnx`` before int8."""
    from rtvi.export.writers import WRITERS

    target = scratch / "fp32.onnx" if config.int8 else staging / MODEL_FILES[config.format]
    if source.module is not None:
        WRITERS[config.format](source.module, target, source.card.preprocessing.crop, len(source.card.labels))
    elif config.format != "onnx":
        raise ExportError(f"{config.model} holds an ONNX model; it can only be written as ONNX (--format onnx)")
    else:
        shutil.copyfile(source.onnx_path, target)
    return target


def export_module(module: torch.nn.Module, output: str | Path, *, labels: Sequence[str],
                  preprocessing: Preprocessing, source: str = "", **options: Any) -> dict[str, Any]:
    """Write a model directory from any torch classifier (``[N, 3, crop, crop]`` in, ``[N, classes]`` out).

    ``options`` are `rtvi export`'s settings by field name (``format="pt2"``, ``int8=True``,
    ``calibration_images="photos/"``, ``overwrite=True``, ...); returns the accuracy report.
    """
    card = ModelCard(tuple(labels), preprocessing, source=source or f"python {type(module).__module__}.{type(module).__qualname__}")
    return export(ExportConfig(output=str(output), **options), Source(card, module=module.eval()))


def export(config: ExportConfig, source: Source | None = None) -> dict[str, Any]:
    """Write the model directory described by ``config`` (from ``source`` if given); returns the accuracy report.

    Raises ExportError (or ModelLoadError) with a one-line reason on bad input, AccuracyGateFailed when int8
    accuracy is too low.
    """
    source = source or load_source(config)
    output = Path(config.output)
    staging = _prepare_output(output, config.overwrite)
    try:
        with tempfile.TemporaryDirectory(prefix="rtvi-export-") as scratch:
            report = _export_into(source, config, staging, Path(scratch))
        if report["passed"]:
            _replace(staging, output)
            return report
        rejected = output.with_name(output.name + ".rejected")
        _replace(staging, rejected)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    check = min(report["int8_vs_fp32"], report["check_set"], key=lambda c: c["top1_agreement"])
    raise AccuracyGateFailed(f"int8 top-1 agreement with fp32 is {check['top1_agreement']:.3f} on {check['images']} held-out "
                             f"images, below --min-agreement {config.min_agreement}; model and report left in {rejected}")


def _export_into(source: Source, config: ExportConfig, staging: Path, scratch: Path) -> dict[str, Any]:
    card, batch_size = source.card, config.batch_size
    calibration = None
    if config.int8 or config.calibration_images or config.calibration_topic:
        from rtvi.export.calibration import load_calibration

        calibration = load_calibration(config, card.preprocessing)
    written = _write_model(source, config, staging, scratch)
    held_out = calibration.held_out if calibration is not None else _parity_batch(card.preprocessing)
    report: dict[str, Any] = {"source": card.source, "format": config.format,
                              "precision": "int8" if config.int8 else "fp32",
                              "held_out_images": calibration.source if calibration is not None else "random pixels",
                              "measured_on": cpu_record()}
    fp32_logits = _written_logits(written, held_out, batch_size)
    if source.module is not None:
        report["export_vs_torch"] = compare(_torch_logits(source.module, held_out, batch_size), fp32_logits)
    logits = fp32_logits
    if config.int8:
        from rtvi.export.quantize import quantize_int8, recipe, run_onnx

        assert calibration is not None
        int8_path = staging / MODEL_FILES["onnx"]
        quantize_int8(written, int8_path, calibration.calibration, method=config.calibration_method,
                      fp32_layers=config.fp32_layers, batch_size=batch_size, recipe_name=config.int8_recipe)
        logits = run_onnx(int8_path, held_out, batch_size)
        report["int8_vs_fp32"] = compare(fp32_logits, logits)
        report["calibration"] = {"images": int(len(calibration.calibration)), "source": calibration.source,
                                 "method": config.calibration_method, "fp32_layers": config.fp32_layers,
                                 "recipe": config.int8_recipe, "quantization": recipe(config.int8_recipe)}
    if calibration is not None:
        # The first held-out images travel with the model, for `rtvi serve` to measure on its own CPU.
        count = min(config.check_set_size, len(calibration.held_out_crops))
        CheckSet(calibration.held_out_crops[:count], fp32_logits[:count], config.min_agreement).save(staging)
        report["check_set"] = {**compare(fp32_logits[:count], logits[:count]), "file": CHECKSET_FILE,
                               "min_agreement": config.min_agreement}
    passed = True
    if config.int8:
        report["min_agreement"] = config.min_agreement
        # The export's own machine must pass the check set `rtvi serve` will run, as well as the gate.
        passed = min(report["int8_vs_fp32"]["top1_agreement"], report["check_set"]["top1_agreement"]) >= config.min_agreement
    report["passed"] = passed
    write_card(staging, ModelCard(card.labels, card.preprocessing, card.source, precision=report["precision"]))
    (staging / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _summary(report: dict[str, Any]) -> str:
    lines = [f"{report['precision']} {report['format']} model from {report['source']}"]
    for key, title in (("export_vs_torch", "exported vs torch"), ("int8_vs_fp32", "int8 vs fp32")):
        if key in report:
            c = report[key]
            lines.append(f"  {title}: top-1 agreement {c['top1_agreement']:.3f}, max |delta logit| "
                         f"{c['max_abs_logit_delta']:.4f} on {c['images']} held-out images ({report['held_out_images']})")
    return "\n".join(lines)


def run_export(config: ExportConfig) -> ExitCode:
    """The CLI entry: one summary on stdout; errors reach `cli.main` (bad input 2, missed gate 1)."""
    if config.to_cache:
        from rtvi.export import cache

        if Path(config.model).is_dir():
            raise ExportError(f"--to-cache takes a torchvision name, not the model directory {config.model}")
        print(f"cached {cache.model_directory(config.model, config.weights, cache.root(config.model_cache))}")
        return ExitCode.OK
    report = export(config)
    print(_summary(report))
    print(f"wrote {config.output} ({', '.join(sorted(p.name for p in Path(config.output).iterdir()))})")
    return ExitCode.OK
