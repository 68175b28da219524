"""Loading one model: resolve its source, load and warm each candidate engine, check, measure, choose.

Runs on a loader thread before the model turns ready, in this order:

1. the source: a model directory, or a torchvision name, served as the ONNX export in the
   model cache (rtvi.export.cache) unless the torch engine is asked for or fits better
   (a CUDA device, fp16), with torch as the fallback when the export fails;
2. one plan per candidate engine (``select.plan``: for ONNX, every installed ONNX engine);
3. each candidate loaded and warmed up (shape checks at batch 1 and the max batch);
4. the directory's check set run on each (``checkset.py``): a candidate below the minimum
   agreement is left out;
5. the candidates left timed against each other (``engines/trial.py``); the fastest serves;
6. if the one chosen still misses the minimum: refused (``--on-accuracy-drop fail``, the
   default) or served with a warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtvi.serving.checkset import CheckResult, CheckSet, evaluate, load_checkset
from rtvi.serving.config import ServerConfig
from rtvi.serving.engines import select
from rtvi.serving.engines.base import Engine, ExecutionPlan
from rtvi.serving.engines.trial import Trial, time_engines
from rtvi.serving.errors import ModelLoadError, first_line
from rtvi.serving.hardware import CpuInfo, cpu_info, cuda_device_present
from rtvi.serving.modeldir import ModelSource, is_model_directory, load_directory
from rtvi.serving.normalize import Normalizer

log = logging.getLogger("rtvi.serve")

ONNX_ENGINES = ("onnxruntime", "openvino")


def resolve_source(location: str, weights: str) -> ModelSource:
    """A model directory's checked contents, or a torchvision architecture's labels and geometry."""
    if is_model_directory(location):
        return load_directory(Path(location))
    if os.sep in location or location.startswith("."):
        raise ModelLoadError(f"{location}: no such model directory")
    from rtvi.serving.engines.torch import torchvision_source  # imports torch: only for architecture names

    return torchvision_source(location, weights)


def serves_names_as_onnx(config: ServerConfig, installed: set[str], cuda: bool) -> bool:
    """Whether a torchvision name goes through its ONNX export: always with an ONNX engine asked
    for; with auto, when an installed ONNX engine computes the precision asked for on the CPU
    and no CUDA device waits for torch (its fp16 autocast is the fast path there)."""
    if config.engine != "auto":
        return config.engine in ONNX_ENGINES
    if "torch" not in installed:
        return True  # an ONNX-only install: the cache or nothing
    if config.device == "cuda" or (config.device == "auto" and cuda):
        return False
    precision = "fp32" if config.precision == "auto" else config.precision
    return any(precision in select.COMPUTE_PRECISIONS[name]["cpu"] for name in ONNX_ENGINES if name in installed)


def served_source(location: str, config: ServerConfig) -> ModelSource:
    """What ``location`` is served from: a model directory, or for a torchvision name its cached ONNX
    export (see serves_names_as_onnx), else the architecture on torch."""
    if is_model_directory(location) or os.sep in location or location.startswith("."):
        return resolve_source(location, config.weights)
    if not serves_names_as_onnx(config, select.installed_engines(), cuda_device_present()):
        return resolve_source(location, config.weights)
    from rtvi.export import cache
    from rtvi.export.errors import ExportError

    try:
        return load_directory(cache.model_directory(location, config.weights, cache.root(config.model_cache)))
    except ExportError as exc:
        if config.engine != "auto":
            raise ModelLoadError(f"{location}: cannot be served on {config.engine}: {first_line(exc)}") from None
        log.warning("%s: not served through ONNX (%s); serving it on torch", location, first_line(exc))
        return resolve_source(location, config.weights)


def _where(source: ModelSource) -> str:
    return source.artifact if source.format != "torchvision" else f"torchvision {source.artifact}"


def _run(engine: Engine, batch: np.ndarray, max_batch: int) -> np.ndarray:
    return np.concatenate([engine.run(batch[i : i + max_batch]) for i in range(0, len(batch), max_batch)])


def warm_up(engine: Engine, normalizer: Normalizer, batch_sizes: list[int]) -> None:
    """Run each batch size once per instance (engines hand out their instances in turn),
    and check the outputs are ``[N, classes]`` for the labels."""
    source, plan, crop = engine.source, engine.plan, engine.source.preprocessing.crop
    where = _where(source)
    for n in [size for size in batch_sizes for _ in range(plan.instances)]:
        batch = normalizer.images(np.zeros((n, crop, crop, 3), dtype=np.uint8))
        try:
            outputs = engine.run(batch)
        except Exception as exc:  # the model cannot run such a batch: say so at start, not per request
            raise ModelLoadError(f"{where}: fails on a batch of {n} at {crop}x{crop}: {first_line(exc)}") from None
        if outputs.ndim != 2 or outputs.shape[0] != n:
            raise ModelLoadError(f"{where}: output shape {list(outputs.shape)} for a batch of {n} is not [N, classes]")
        if outputs.shape[1] != len(source.labels):
            labels = Path(source.artifact).with_name("labels.txt") if source.format != "torchvision" else where
            raise ModelLoadError(
                f"{labels}: {len(source.labels)} labels but {where} outputs {outputs.shape[1]} classes "
                "(one label per output, in index order)")


def refusal(name: str, checks: dict[str, CheckResult], plans: dict[str, ExecutionPlan], source: ModelSource,
            cpu: CpuInfo) -> str:
    """One line: the agreement, the engine(s), the CPU, and what to do about it."""
    found = "; ".join(f"{engine} {plans[engine].precision}: {check.describe()}" for engine, check in checks.items())
    if source.stored_precision == "int8":
        remedy = ("re-export it with this rtvi's `rtvi export --int8` (its recipe keeps accuracy without VNNI) "
                  "or serve the fp32 model")
    elif any(plans[engine].precision == "bf16" for engine in checks):
        remedy = "serve it with --precision fp32"
    else:
        remedy = "check that model.onnx is the file its check set was exported with"
    return (f"model {name}: accuracy below the model directory's minimum on this CPU, {cpu.describe()}: {found}; "
            f"{remedy}, or pass --on-accuracy-drop warn to serve it anyway")


@dataclass
class Loaded:
    """The engine that serves, and how it was chosen (for the log, ModelConfig and metrics)."""

    source: ModelSource
    engine: Engine
    normalizer: Normalizer
    choice: str  # "asked for", "the only candidate", "measured" or "check set"
    trial: Trial | None = None
    check: CheckResult | None = None


def _check_all(engines: dict[str, Engine], checkset: CheckSet, normalizer: Normalizer, max_batch: int,
               model: str) -> dict[str, CheckResult]:
    inputs = normalizer.images(checkset.crops)
    checks = {}
    for name, engine in engines.items():
        checks[name] = evaluate(checkset, _run(engine, inputs, max_batch))
        log.info("model %s: %s %s check set: %s", model, name, engine.plan.precision, checks[name].describe())
    return checks


def load(name: str, location: str, config: ServerConfig) -> Loaded:
    """Resolve, plan, load, warm up, check and choose (on a loader thread)."""
    source = served_source(location, config)
    try:
        decision = select.plan(config, source)
    except ModelLoadError as exc:  # a flag that does not fit this model: say which model
        raise ModelLoadError(f"model {name}: {exc}") from None
    for warning in decision.warnings:
        log.warning("model %s: %s", name, warning)
    log.info("model %s: %s (%s)", name, " | ".join(p.describe() for p in decision.plans), "; ".join(decision.reasons))
    checkset = None
    if source.format != "torchvision":
        checkset = load_checkset(Path(source.artifact).parent, source.preprocessing.crop, len(source.labels))
    normalizer = Normalizer(source.preprocessing)
    max_batch = config.max_batch_size
    engines: dict[str, Engine] = {}
    for plan in decision.plans:
        engine = select.engine_class(plan.engine)(source, plan)
        engine.load()
        warm_up(engine, normalizer, sorted({1, max_batch}))
        engines[plan.engine] = engine
    checks = _check_all(engines, checkset, normalizer, max_batch, name) if checkset is not None else {}
    passing = [engine for engine in engines if engine not in checks or checks[engine].passed]
    if not passing:
        line = refusal(name, checks, {e: engines[e].plan for e in checks}, source, cpu_info())
        if config.on_accuracy_drop == "fail":
            raise ModelLoadError(line)
        log.warning("%s (serving anyway: --on-accuracy-drop warn)", line)
    contenders = passing or list(engines)
    trial = None
    if len(contenders) > 1:
        crop = source.preprocessing.crop
        batch = normalizer.images(np.zeros((max_batch, crop, crop, 3), dtype=np.uint8))
        trial = time_engines({e: engines[e].run for e in contenders}, batch, decision.plans[0].instances,
                             config.engine_trial_s)
        chosen, how = trial.fastest, "measured"
        log.info("model %s: timed %s: serving on %s", name, trial.describe(), chosen)
    else:
        chosen = contenders[0]
        how = ("asked for" if config.engine != "auto" else
               "check set" if len(engines) > 1 else "the only candidate")
    return Loaded(source, engines[chosen], normalizer, how, trial, checks.get(chosen))
