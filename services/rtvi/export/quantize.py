"""Static int8 quantization of an fp32 ONNX classifier with ONNX Runtime.

The recipe is ONNX Runtime's recommendation for its CPU execution provider on x86 without
VNNI, which holds with VNNI too: the QDQ format (QuantizeLinear/DequantizeLinear pairs that
ORT fuses into integer kernels, and that OpenVINO reads too), uint8 activations with int8
weights (U8S8, the fast path on x86) quantized to 7 bits (``reduce_range``: AVX2's
vpmaddubsw adds two u8 x s8 products into a saturating 16-bit lane, and only 7-bit weights
keep every sum in range, so the model computes the same on every x86 CPU; the README has
the measurements against full 8-bit weights, S8S8 and U8U8), per-channel weight scales
(per-tensor scales lose too much on depthwise convolutions such as MobileNet's and
EfficientNet's), and the model first shape-inferred and optimized by ``quant_pre_process``
(Conv+BatchNorm fusion), which ORT's documentation asks for before quantization.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rtvi.export.errors import ExportError

log = logging.getLogger(__name__)


def run_onnx(path: Path, batch: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits of ``batch`` from the ONNX model at ``path`` on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: batch[i : i + batch_size]})[0]
                           for i in range(0, len(batch), batch_size)])


def _fp32_nodes(model_path: Path, which: str) -> list[str]:
    """Names of the nodes ``--fp32-layers`` keeps unquantized: the one reading the input, the one writing the output."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    inputs, outputs = {i.name for i in graph.input}, {o.name for o in graph.output}
    first = [n.name for n in graph.node if inputs & set(n.input)][:1]
    last = [n.name for n in graph.node if outputs & set(n.output)][-1:]
    return {"none": [], "last": last, "first-last": first + last}[which]


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantizer logs a line per adjusted weight scale on the root logger, at INFO."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over an in-memory array."""

    def __init__(self, input_name: str, data: np.ndarray, batch_size: int) -> None:
        self._feeds = iter([{input_name: data[i : i + batch_size]} for i in range(0, len(data), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


# --int8-recipe -> (activations, weights, reduce_range): "u8", "s8" for 8-bit unsigned/signed; reduce_range
# quantizes the weights to 7 bits, so two u8 x s7 products and their sum fit vpmaddubsw's 16 bits.
RECIPES = {"reduce-range": ("u8", "s8", True), "u8s8": ("u8", "s8", False), "s8s8": ("s8", "s8", False)}


def recipe(name: str = "reduce-range") -> str:
    """How the recipe quantizes, for the report: e.g. ``QDQ U8S8 per-channel, 7-bit weights (reduce_range)``."""
    activations, weights, reduce_range = RECIPES[name]
    bits = ", 7-bit weights (reduce_range)" if reduce_range else ""
    return f"QDQ {activations.upper()}{weights.upper()} per-channel{bits}"


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray, *, method: str, fp32_layers: str,
                  batch_size: int, recipe_name: str = "reduce-range") -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    activations, weights, reduce_range = RECIPES[recipe_name]
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    input_name = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rtvi-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        log.info("int8: preparing the fp32 model (shape inference, Conv+BN fusion)")
        try:
            quant_pre_process(str(fp32_path), str(prepared))
        except Exception as exc:  # noqa: BLE001 - onnx/ORT raise many types
            raise ExportError(f"int8: the ONNX model cannot be prepared for quantization: {exc}") from None
        excluded = _fp32_nodes(prepared, fp32_layers)
        log.info("int8: calibrating on %d images (%s, %s; fp32 nodes: %s)",
                 len(calibration), method, recipe(recipe_name), ", ".join(excluded) or "none")
        with _quiet_root_logger():
            quantize_static(
                str(prepared), str(out_path), _Batches(input_name, calibration, batch_size),
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                activation_type=types[activations], weight_type=types[weights], calibrate_method=methods[method],
                nodes_to_exclude=excluded,
            )
    log.info("int8: quantized in %.1fs (%.1f MB)", time.monotonic() - started, out_path.stat().st_size / 1e6)
