"""Choose engines, device, precision, instances and threads from the artifact and the hardware.

The rules are pure functions (unit-tested); ``plan`` gathers the facts (installed
runtimes, CUDA, CPU flags, usable CPUs) and applies them. Every choice comes with the
reason the start-up log prints. Where several installed engines run the artifact (ONNX:
ONNX Runtime and OpenVINO) and none is forced, each gets a plan and the loader measures
which is faster here (``trial.py``): which one wins differs by CPU, model and precision.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field

from rtvi.serving.config import ServerConfig
from rtvi.serving.engines.base import Engine, ExecutionPlan
from rtvi.serving.errors import ModelLoadError
from rtvi.serving.hardware import CpuInfo, available_cpus, cpu_info
from rtvi.serving.modeldir import ModelSource

# Engine name -> (module with the Engine class, the Python package it needs, install hint).
ENGINES: dict[str, tuple[str, str, str]] = {
    "torch": ("rtvi.serving.engines.torch:TorchEngine", "torch", "pip install 'rtvi[serve]'"),
    "onnxruntime": ("rtvi.serving.engines.onnxruntime:OnnxRuntimeEngine", "onnxruntime", "pip install 'rtvi[serve-onnx]'"),
    "openvino": ("rtvi.serving.engines.openvino:OpenVinoEngine", "openvino", "pip install 'rtvi[openvino]'"),
}
# Which engines read which artifact format, in order of preference.
READERS: dict[str, tuple[str, ...]] = {
    "torchvision": ("torch",),
    "torchscript": ("torch",),
    "torch_export": ("torch",),
    "onnx": ("onnxruntime", "openvino"),
}
# Precisions an engine can compute an fp32 artifact in, per device. ONNX Runtime runs
# the graph's own types (it has no autocast); an int8 or fp16 artifact runs as stored.
COMPUTE_PRECISIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "torch": {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16")},
    "onnxruntime": {"cpu": ("fp32",), "cuda": ("fp32",)},
    "openvino": {"cpu": ("fp32", "bf16"), "cuda": ()},
}
# More instances than this per model add memory and queueing, not throughput; the
# remaining CPUs become threads per instance.
MAX_AUTO_INSTANCES = 4
CUDA_AUTO_INSTANCES = 2  # one computes while the next batch is copied in


@dataclass(frozen=True)
class Choice:
    value: str
    reason: str
    warning: str = ""


@dataclass(frozen=True)
class EngineChoice:
    candidates: tuple[str, ...]
    reason: str


def choose_engines(requested: str, fmt: str, installed: set[str]) -> EngineChoice:
    """The engines to load, in order of preference.

    ``--engine NAME`` forces one. ``auto`` takes every installed engine that reads the
    format: for ONNX that can be both ONNX Runtime and OpenVINO, and the faster of them on
    this machine is then measured at load (``trial.py``).
    """
    readers = READERS[fmt]
    if requested != "auto":
        if requested not in readers:
            raise ModelLoadError(f"--engine {requested} cannot run a {fmt} model (engines that can: {', '.join(readers)})")
        if requested not in installed:
            raise ModelLoadError(f"--engine {requested} is not installed ({ENGINES[requested][2]})")
        return EngineChoice((requested,), "asked for with --engine")
    found = tuple(name for name in readers if name in installed)
    if not found:
        hints = "; ".join(ENGINES[name][2] for name in readers)
        raise ModelLoadError(f"no engine for a {fmt} model is installed ({hints})")
    if len(found) > 1:
        return EngineChoice(found, f"{' and '.join(found)} both run this {fmt} model: the faster here is measured at load")
    if fmt == "onnx":
        return EngineChoice(found, f"an ONNX model, and {found[0]} is the ONNX runtime installed")
    return EngineChoice(found, f"a {fmt} model runs on torch")


def choose_device(requested: str, cuda: bool) -> Choice:
    if requested == "cuda" and not cuda:
        raise ModelLoadError("--device cuda was asked for but the engine sees no CUDA device")
    if requested == "auto":
        return Choice("cuda" if cuda else "cpu", "a CUDA device is present" if cuda else "no CUDA device")
    return Choice(requested, "asked for with --device")


def choose_precision(requested: str, engine: str, device: str, stored: str, cpu: CpuInfo) -> Choice:
    """Never an emulated path by default: bf16 only with native bf16 or CUDA, fp16 only on CUDA."""
    if stored != "fp32":
        warning = "" if requested in ("auto", stored) else (
            f"--precision {requested} ignored: the artifact is {stored} and runs as stored")
        return Choice(stored, f"the artifact is stored in {stored}", warning)
    supported = COMPUTE_PRECISIONS[engine][device]
    if requested == "auto":
        if device == "cuda" and "fp16" in supported:
            return Choice("fp16", "CUDA computes fp16 natively")
        if device == "cpu" and cpu.native_bf16 and "bf16" in supported:
            return Choice("bf16", f"this CPU computes bf16 natively ({cpu.capability})")
        if device == "cpu" and "bf16" in supported:
            return Choice("fp32", f"this CPU has no native bf16 ({cpu.capability}); bf16 would be emulated")
        return Choice("fp32", f"{engine} runs an fp32 graph in fp32")
    if requested not in supported:
        others = [name for name, devices in COMPUTE_PRECISIONS.items() if requested in devices[device]]
        raise ModelLoadError(
            f"--precision {requested} is not available with {engine} on {device} "
            f"(it runs {', '.join(supported) or 'nothing'} here; engines that can: {', '.join(others) or 'none'})")
    if requested == "bf16" and device == "cpu" and not cpu.native_bf16:
        return Choice("bf16", "asked for with --precision", (
            f"--precision bf16 on a CPU WITHOUT native bf16 ({cpu.model}: {cpu.capability}; no avx512_bf16 "
            "or amx_bf16): bf16 is EMULATED and several times SLOWER than fp32; use --precision auto"))
    return Choice(requested, "asked for with --precision")


def choose_parallelism(instances: int, threads: int, cpus: int, device: str) -> tuple[int, int, str]:
    """Instances and threads per instance; 0 means auto, from the CPUs this process may use.

    On CPU: one instance per CPU up to MAX_AUTO_INSTANCES with one thread each, the rest
    as threads (measured on 2 cores: 2 x 1 reached 90% of the model ceiling, 1 x 2 78%).
    """
    if device == "cuda":
        instances = instances or CUDA_AUTO_INSTANCES
    elif not instances:
        instances = max(1, min(MAX_AUTO_INSTANCES, cpus // (threads or 1)))
    threads = threads or max(1, cpus // instances)
    return instances, threads, f"{cpus} usable CPUs (affinity and cgroup quota)"


def installed_engines() -> set[str]:
    return {name for name, (_, package, _) in ENGINES.items() if importlib.util.find_spec(package) is not None}


def engine_class(name: str) -> type[Engine]:
    module, _, cls = ENGINES[name][0].partition(":")
    return getattr(importlib.import_module(module), cls)


@dataclass
class Decision:
    """One plan per engine to load, in order of preference; more than one means: measure them."""

    plans: list[ExecutionPlan]
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def plan(config: ServerConfig, source: ModelSource) -> Decision:
    engines = choose_engines(config.engine, source.format, installed_engines())
    candidates = engines.candidates
    cpu = cpu_info()
    plans, reasons, warnings, refused = [], [f"engine {'/'.join(candidates)}: {engines.reason}"], [], []
    for name in candidates:
        try:
            device = choose_device(config.device, engine_class(name).cuda_available())
            precision = choose_precision(config.precision, name, device.value, source.stored_precision, cpu)
        except ModelLoadError as exc:
            if len(candidates) == 1:
                raise
            refused.append(f"{name}: {exc}")
            continue
        instances, threads, cpus = choose_parallelism(config.instances, config.threads, available_cpus(), device.value)
        plans.append(ExecutionPlan(name, device.value, precision.value, instances, threads,
                                   channels_last=config.channels_last, compile=config.compile))
        prefix = f"{name} " if len(candidates) > 1 else ""
        reasons += [f"{prefix}device {device.value}: {device.reason}", f"{prefix}precision {precision.value}: {precision.reason}"]
        warnings += [precision.warning] if precision.warning else []
    if not plans:
        raise ModelLoadError("; ".join(refused))
    reasons += [f"left out {reason}" for reason in refused]
    reasons.append(f"{plans[0].instances} instances x {plans[0].threads} threads: {cpus}")
    return Decision(plans, reasons, warnings)
