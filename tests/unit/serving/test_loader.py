"""Where a torchvision name is served from, and the one line that refuses a model whose check set fails."""

from __future__ import annotations

import pytest

from rtvi.serving.checkset import CheckResult
from rtvi.serving.config import ServerConfig
from rtvi.serving.engines.base import ExecutionPlan
from rtvi.serving.hardware import CpuInfo
from rtvi.serving.loader import refusal, serves_names_as_onnx
from rtvi.serving.modeldir import ModelSource, Preprocessing

ALL = {"torch", "onnxruntime", "openvino"}
AVX2 = CpuInfo("AMD EPYC 7R32", frozenset({"avx2", "fma"}))


@pytest.mark.parametrize(("settings", "installed", "cuda", "expected"), [
    ({}, ALL, False, True),  # the default: ONNX on the measured-fastest engine
    ({"engine": "torch"}, ALL, False, False),
    ({"engine": "openvino"}, ALL, True, True),  # an ONNX engine asked for
    ({}, ALL, True, False),  # a GPU: torch's fp16
    ({"device": "cpu"}, ALL, True, True),
    ({"device": "cuda"}, ALL, True, False),
    ({"precision": "bf16"}, ALL, False, True),  # OpenVINO computes bf16
    ({"precision": "bf16"}, {"torch", "onnxruntime"}, False, False),  # ONNX Runtime does not: torch does
    ({}, {"onnxruntime"}, False, True),  # no torch: the cache or nothing
])
def test_which_names_go_through_onnx(settings, installed, cuda, expected):
    assert serves_names_as_onnx(ServerConfig(**settings), installed, cuda) is expected


def _source(precision: str) -> ModelSource:
    return ModelSource("onnx", "/m/model.onnx", ("a", "b"), Preprocessing(8, 8, (0, 0, 0), (1, 1, 1)),
                       stored_precision=precision)


def _plan(engine: str, precision: str) -> ExecutionPlan:
    return ExecutionPlan(engine, "cpu", precision, 2, 1)


def test_refusal_names_the_agreement_the_cpu_and_the_remedy():
    checks = {"onnxruntime": CheckResult(32, 0.875, 3.02, 0.98), "openvino": CheckResult(32, 0.75, 5.07, 0.98)}
    plans = {"onnxruntime": _plan("onnxruntime", "int8"), "openvino": _plan("openvino", "int8")}
    line = refusal("lite0-int8", checks, plans, _source("int8"), AVX2)
    assert "\n" not in line and line.startswith("model lite0-int8: ")
    assert "AMD EPYC 7R32 (avx2 fma, no VNNI)" in line
    assert "onnxruntime int8: top-1 agreement with fp32 0.875 on 32 check-set images (minimum 0.98)" in line
    assert "openvino int8: top-1 agreement with fp32 0.750" in line
    assert "rtvi export --int8" in line and "--on-accuracy-drop warn" in line


def test_refusal_of_bf16_suggests_fp32():
    line = refusal("m", {"openvino": CheckResult(32, 0.9, 1.0, 0.98)}, {"openvino": _plan("openvino", "bf16")},
                   _source("fp32"), AVX2)
    assert "--precision fp32" in line
