"""Model files from a torch module: ONNX (fp32), TorchScript and torch.export, each with a dynamic batch.

ONNX goes through torch's dynamo-based exporter (``torch.onnx.export(dynamo=True)``, the
default and maintained path since torch 2.9; it needs onnxscript): it exports what
``torch.export`` captures, so a model that exports to ``model.pt2`` exports to ONNX the
same way. TorchScript modules cannot be captured by torch.export, so they go through the
legacy TorchScript-based exporter. Weights are stored inside ``model.onnx`` (no external
data file), which holds for any classifier under ONNX's 2 GB protobuf limit.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rtvi.export.errors import ExportError
from rtvi.export.modeldir import INPUT_NAME, OUTPUT_NAME

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
# The ONNX exporter's optimizer logs every rewrite at INFO; its warnings still show.
for _chatty in ("onnxscript", "onnx_ir"):
    logging.getLogger(_chatty).setLevel(logging.WARNING)

# Example batch for tracing; the batch axis is declared dynamic, so 2 avoids torch.export
# specializing a batch of 1 into the graph.
_EXAMPLE_BATCH = 2


def _example(crop: int) -> torch.Tensor:
    import torch

    return torch.randn(_EXAMPLE_BATCH, 3, crop, crop, generator=torch.Generator().manual_seed(0))


def _check_output(module: torch.nn.Module, example: torch.Tensor, labels: int) -> None:
    """A model directory serves a classifier: the output must be [N, classes] and match the labels."""
    import torch

    with torch.inference_mode():
        out = module(example)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != example.shape[0]:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ExportError(f"the model's output is {shape}, not a [N, classes] logits tensor")
    if out.shape[1] != labels:
        raise ExportError(f"the model has {out.shape[1]} outputs but there are {labels} labels")


def _batch_dim():
    import torch

    return torch.export.Dim("batch", min=1, max=1024)


def write_onnx(module: torch.nn.Module, path: Path, crop: int, labels: int) -> None:
    import torch

    example = _example(crop)
    _check_output(module, example, labels)
    started = time.monotonic()
    log.info("exporting ONNX (fp32, dynamic batch) to %s; this takes a few seconds to a minute", path)
    try:
        if isinstance(module, torch.jit.ScriptModule):
            torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        else:
            program = torch.onnx.export(module, (example,), dynamo=True, verbose=False, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=({0: _batch_dim()},))
            program.save(str(path), external_data=False)
    except Exception as exc:  # noqa: BLE001 - the exporters raise many types
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {_first_line(exc)}") from None
    log.info("ONNX written in %.1fs (%.1f MB)", time.monotonic() - started, path.stat().st_size / 1e6)


def write_torchscript(module: torch.nn.Module, path: Path, crop: int, labels: int) -> None:
    import torch

    example = _example(crop)
    _check_output(module, example, labels)
    try:
        with torch.inference_mode():
            traced = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.trace(module, example)
        traced.save(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"TorchScript export failed: {type(exc).__name__}: {_first_line(exc)}") from None


def write_pt2(module: torch.nn.Module, path: Path, crop: int, labels: int) -> None:
    import torch

    example = _example(crop)
    _check_output(module, example, labels)
    if isinstance(module, torch.jit.ScriptModule):
        raise ExportError("a TorchScript model cannot be captured by torch.export: use --format torchscript or onnx")
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: _batch_dim()},))
        torch.export.save(program, str(path))
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"torch.export failed: {type(exc).__name__}: {_first_line(exc)}") from None


WRITERS = {"onnx": write_onnx, "torchscript": write_torchscript, "pt2": write_pt2}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"
