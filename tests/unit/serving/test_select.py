"""Engine, precision and parallelism rules: pure functions over the facts."""

from __future__ import annotations

import pytest

from rtvi.serving.engines.select import choose_device, choose_engines, choose_parallelism, choose_precision
from rtvi.serving.errors import ModelLoadError
from rtvi.serving.hardware import CpuInfo

AVX2 = CpuInfo("AMD EPYC 7R32", frozenset({"avx2", "fma"}))
ZEN4 = CpuInfo("AMD EPYC 9R14", frozenset({"avx2", "fma", "avx512f", "avx512_bf16"}))
AMX = CpuInfo("Xeon 8488C", frozenset({"avx512f", "amx_bf16"}))
ALL = {"torch", "onnxruntime", "openvino"}


@pytest.mark.parametrize(("engine", "device", "cpu", "expected"), [
    ("torch", "cpu", AVX2, "fp32"),  # never emulated bf16
    ("torch", "cpu", ZEN4, "bf16"),
    ("torch", "cpu", AMX, "bf16"),
    ("torch", "cuda", AVX2, "fp16"),
    ("openvino", "cpu", ZEN4, "bf16"),
    ("openvino", "cpu", AVX2, "fp32"),
    ("onnxruntime", "cpu", ZEN4, "fp32"),  # runs the graph as stored
    ("onnxruntime", "cuda", ZEN4, "fp32"),
])
def test_auto_precision_is_native_only(engine, device, cpu, expected):
    choice = choose_precision("auto", engine, device, "fp32", cpu)
    assert choice.value == expected and not choice.warning


def test_explicit_bf16_without_native_support_runs_with_a_loud_warning():
    choice = choose_precision("bf16", "torch", "cpu", "fp32", AVX2)
    assert choice.value == "bf16"
    assert "WITHOUT native bf16" in choice.warning and "AMD EPYC 7R32: avx2 fma" in choice.warning
    assert not choose_precision("bf16", "torch", "cpu", "fp32", ZEN4).warning


def test_an_int8_artifact_runs_as_stored():
    assert choose_precision("auto", "onnxruntime", "cpu", "int8", ZEN4).value == "int8"
    choice = choose_precision("bf16", "onnxruntime", "cpu", "int8", ZEN4)
    assert choice.value == "int8" and "ignored" in choice.warning


def test_precision_an_engine_cannot_compute_is_refused():
    with pytest.raises(ModelLoadError, match="--precision bf16 is not available with onnxruntime on cpu.*torch, openvino"):
        choose_precision("bf16", "onnxruntime", "cpu", "fp32", ZEN4)
    with pytest.raises(ModelLoadError, match="--precision fp16 is not available with torch on cpu"):
        choose_precision("fp16", "torch", "cpu", "fp32", ZEN4)


@pytest.mark.parametrize(("fmt", "installed", "expected"), [
    ("torchvision", ALL, ("torch",)),
    ("torchscript", ALL, ("torch",)),
    ("torch_export", ALL, ("torch",)),
    ("onnx", ALL, ("onnxruntime", "openvino")),  # both loaded; the faster here is measured
    ("onnx", {"onnxruntime"}, ("onnxruntime",)),
    ("onnx", {"openvino"}, ("openvino",)),
])
def test_auto_engines_by_artifact(fmt, installed, expected):
    choice = choose_engines("auto", fmt, installed)
    assert choice.candidates == expected and choice.reason
    assert ("measured" in choice.reason) == (len(expected) > 1)


def test_a_named_engine_is_the_only_candidate():
    assert choose_engines("openvino", "onnx", ALL).candidates == ("openvino",)


def test_engine_errors_say_what_to_do():
    with pytest.raises(ModelLoadError, match=r"rtvi\[serve-onnx\]"):
        choose_engines("auto", "onnx", {"torch"})
    with pytest.raises(ModelLoadError, match="cannot run a torchscript model"):
        choose_engines("onnxruntime", "torchscript", ALL)
    with pytest.raises(ModelLoadError, match=r"not installed .*rtvi\[openvino\]"):
        choose_engines("openvino", "onnx", {"onnxruntime"})


def test_device():
    assert choose_device("auto", cuda=True).value == "cuda"
    assert choose_device("auto", cuda=False).value == "cpu"
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        choose_device("cuda", cuda=False)


@pytest.mark.parametrize(("instances", "threads", "cpus", "device", "expected"), [
    (0, 0, 2, "cpu", (2, 1)),  # the measured best on 2 cores
    (0, 0, 1, "cpu", (1, 1)),
    (0, 0, 8, "cpu", (4, 2)),
    (0, 0, 64, "cpu", (4, 16)),
    (1, 0, 2, "cpu", (1, 2)),
    (0, 2, 8, "cpu", (4, 2)),
    (0, 4, 2, "cpu", (1, 4)),
    (3, 5, 2, "cpu", (3, 5)),  # explicit wins
    (0, 0, 16, "cuda", (2, 8)),
])
def test_parallelism_from_usable_cpus(instances, threads, cpus, device, expected):
    assert choose_parallelism(instances, threads, cpus, device)[:2] == expected
