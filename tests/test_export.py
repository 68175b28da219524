"""`rtvi export`: model directories that serving's own reader accepts, int8 calibration from a
folder or a real broker's topic, the accuracy gate, and one clear line for each bad input.

Small models built here keep the exports to seconds; the real-weights accuracy of export
plus serving is tests/test_accuracy.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, free_port, jpeg_bytes, produce_frames, rtvi_command
from support.model_dirs import SmallNet as Small
from rtvi.settings import ConfigError
from rtvi.export import ExportError, Preprocessing, export_module
from rtvi.export.config import ExportConfig
from rtvi.export.modeldir import ModelCard, write_card
from rtvi.serving.checkset import load_checkset
from rtvi.serving.hardware import cpu_info
from rtvi.serving.modeldir import load_directory

SMALL = Preprocessing(resize=40, crop=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
LABELS = [f"class {i}" for i in range(5)]


class NearTies(torch.nn.Module):
    """Ten classes whose weights differ by far less than one int8 step: int8 cannot rank them as fp32 does."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.pool = torch.nn.AdaptiveAvgPool2d(4)
        self.head = torch.nn.Linear(48, 10)
        with torch.no_grad():
            self.head.weight.copy_(1.0 + 1e-3 * torch.randn(10, 48))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x).flatten(1))


def run_export(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(rtvi_command("export", *args), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(out: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> None:
    """Bad input exits 2, an unreachable dependency 4 (rtvi.errors.ExitCode), as for every command."""
    assert out.returncode == code, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("rtvi export:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for i in range(10):
        (folder / f"frame-{i}.jpg").write_bytes(jpeg_bytes(160, 120, seed=i))
    return folder


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "small-onnx"
    export_module(Small(), out, labels=LABELS, preprocessing=SMALL)
    return out


# --- pure logic -------------------------------------------------------------------

@pytest.mark.parametrize("settings, message", [
    ({}, "exactly one of --output DIR and --to-cache"),
    ({"output": "o", "to_cache": True, "model": "resnet18"}, "exactly one of --output DIR and --to-cache"),
    ({"to_cache": True, "model": "resnet18", "int8": True, "calibration_images": "a"}, "--to-cache exports a torchvision"),
    ({"output": "o", "check_set_size": 0}, "check set size must be >= 1"),
    ({"output": "o", "int8": True}, "needs exactly one of --calibration-images"),
    ({"output": "o", "int8": True, "calibration_images": "a", "calibration_topic": "t"}, "exactly one of"),
    ({"output": "o", "int8": True, "calibration_images": "a", "format": "pt2"}, "use --format onnx"),
    ({"output": "o", "mean": "0.5,0.5"}, "--mean must be 3 comma-separated numbers"),
    ({"output": "o", "std": "0.2,0,0.2"}, "--std values must be > 0"),
    ({"output": "o", "from_module": "pkg.mod"}, "package.module:factory"),
    ({"output": "o", "from_module": "pkg.mod:build"}, "--from-module needs --labels"),
    ({"output": "o", "min_agreement": 1.5}, "min agreement"),
])
def test_config_refuses_what_cannot_run(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        ExportConfig(**settings)


def test_written_card_is_read_back_by_serving(tmp_path, caplog):
    (tmp_path / "model.onnx").write_bytes(b"not loaded by the reader")
    labels = ("tabby cat", "Egyptian cat", "espresso")
    write_card(tmp_path, ModelCard(labels, SMALL, source="a test", precision="int8"))
    source = load_directory(tmp_path)
    assert source.labels == labels and source.preprocessing == SMALL
    assert (source.input_name, source.output_name, source.stored_precision) == ("pixels", "logits", "int8")
    assert "unknown keys" not in caplog.text


# --- model directories ---------------------------------------------------------------

@pytest.mark.parametrize("fmt, file", [("onnx", "model.onnx"), ("torchscript", "model.pt"), ("pt2", "model.pt2")])
def test_export_module_writes_a_directory_serving_reads(tmp_path, fmt, file):
    report = export_module(Small(), tmp_path / "m", labels=LABELS, preprocessing=SMALL, format=fmt)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([file, "labels.txt", "config.yaml", "accuracy.json"])
    source = load_directory(tmp_path / "m")
    assert source.labels == tuple(LABELS) and source.artifact.endswith(file)
    check = report["export_vs_torch"]
    assert check["top1_agreement"] == 1.0 and check["max_abs_logit_delta"] < 1e-4
    assert json.loads((tmp_path / "m" / "accuracy.json").read_text()) == report
    assert not list(tmp_path.glob(".m.partial-*")), "the staging directory is renamed into place"


def test_onnx_has_a_dynamic_batch_axis(onnx_dir):
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    assert model_input.name == "pixels" and isinstance(model_input.shape[0], str) and model_input.shape[1:] == [3, 32, 32]
    for batch in (1, 3, 7):
        out = session.run(None, {"pixels": np.zeros((batch, 3, 32, 32), np.float32)})[0]
        assert out.shape == (batch, len(LABELS))


def test_output_must_match_the_labels(tmp_path):
    with pytest.raises(ExportError, match="the model has 5 outputs but there are 3 labels"):
        export_module(Small(), tmp_path / "m", labels=LABELS[:3], preprocessing=SMALL)
    assert not (tmp_path / "m").exists() and not list(tmp_path.iterdir())


def test_a_torch_export_directory_is_exported_again_as_onnx(tmp_path):
    export_module(Small(), tmp_path / "pt2", labels=LABELS, preprocessing=SMALL, format="pt2")
    out = run_export("--model", str(tmp_path / "pt2"), "--output", str(tmp_path / "onnx"))
    assert out.returncode == 0, out.stderr
    assert load_directory(tmp_path / "onnx").format == "onnx"


# --- int8 -----------------------------------------------------------------------------

def test_int8_from_a_folder_reports_agreement_and_is_quantized(tmp_path, onnx_dir, images):
    out = run_export("--model", str(onnx_dir), "--int8", "--calibration-images", str(images), "--output", str(tmp_path / "q"),
                     "--min-agreement", "0.5")
    assert out.returncode == 0, out.stderr
    assert "int8 vs fp32: top-1 agreement" in out.stdout
    report = json.loads((tmp_path / "q" / "accuracy.json").read_text())
    assert report["calibration"]["images"] == 8 and report["int8_vs_fp32"]["images"] == 2
    assert report["calibration"]["recipe"] == "reduce-range"
    assert load_directory(tmp_path / "q").stored_precision == "int8"
    # where it was measured, and the held-out images `rtvi serve` measures again on its own CPU
    assert report["measured_on"]["model"] == cpu_info().model and report["measured_on"]["flags"]
    assert report["check_set"]["images"] == 2 and report["check_set"]["min_agreement"] == 0.5
    checkset = load_checkset(tmp_path / "q", crop=32, classes=len(LABELS))
    assert checkset is not None and checkset.crops.shape == (2, 32, 32, 3) and checkset.min_agreement == 0.5
    import onnx

    ops = {node.op_type for node in onnx.load(str(tmp_path / "q" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_int8_recipe_is_a_choice_and_recorded(tmp_path, onnx_dir, images):
    out = run_export("--model", str(onnx_dir), "--int8", "--int8-recipe", "u8s8", "--calibration-images", str(images),
                     "--min-agreement", "0", "--check-set-size", "1", "--output", str(tmp_path / "q"))
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "q" / "accuracy.json").read_text())
    assert report["calibration"]["quantization"] == "QDQ U8S8 per-channel" and report["check_set"]["images"] == 1


def test_to_cache_exports_a_torchvision_name_where_serve_finds_it(tmp_path):
    from rtvi.export import cache

    first = run_export("--model", "mobilenet_v3_small", "--weights", "none", "--to-cache", "--model-cache", str(tmp_path))
    assert first.returncode == 0, first.stderr
    entry = Path(first.stdout.split("cached ", 1)[1].strip())
    assert entry.parent == tmp_path and entry.name == cache.entry_name("mobilenet_v3_small", "none")
    assert load_directory(entry).format == "onnx"
    assert json.loads((entry / "accuracy.json").read_text())["export_vs_torch"]["top1_agreement"] == 1.0
    again = run_export("--model", "mobilenet_v3_small", "--weights", "none", "--to-cache", "--model-cache", str(tmp_path))
    assert again.stdout == first.stdout and "exporting" not in again.stderr  # found, not exported again


# Runs `rtvi export` as if torch and torchvision were not installed: a None entry in
# sys.modules makes `import torch` fail and importlib.util.find_spec("torch") say None.
NO_TORCH = """
import sys
sys.modules.update(dict.fromkeys(["torch", "torchvision"]))
from rtvi.cli import main
sys.exit(main(["export", *sys.argv[1:]]))
"""


def test_int8_of_an_onnx_directory_needs_no_torch(tmp_path, onnx_dir, images):
    out = subprocess.run([sys.executable, "-c", NO_TORCH, "--model", str(onnx_dir), "--int8", "--calibration-images",
                          str(images), "--min-agreement", "0", "--output", str(tmp_path / "q")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert load_directory(tmp_path / "q").stored_precision == "int8"


def test_int8_below_min_agreement_fails_and_is_not_put_in_place(tmp_path, images):
    fp32 = tmp_path / "ties"
    export_module(NearTies(), fp32, labels=[str(i) for i in range(10)], preprocessing=SMALL)
    target = tmp_path / "ties-int8"
    out = run_export("--model", str(fp32), "--int8", "--calibration-images", str(images), "--holdout-every", "2",
                     "--fp32-layers", "none", "--output", str(target))
    assert_one_line_error(out, "int8 top-1 agreement with fp32 is", "below --min-agreement 0.98", "ties-int8.rejected",
                          code=1)  # the work ran and failed its gate (ExitCode.FAILED)
    assert not target.exists()
    report = json.loads((tmp_path / "ties-int8.rejected" / "accuracy.json").read_text())
    assert report["passed"] is False and report["int8_vs_fp32"]["top1_agreement"] < 0.98


def test_int8_calibrates_on_frames_from_a_topic(tmp_path, onnx_dir, broker, topics):
    produce_frames(tmp_path, broker, topics["frames"], frames_per_stream=15, streams=2)
    out = run_export("--model", str(onnx_dir), "--int8", "--calibration-topic", topics["frames"],
                     "--bootstrap-servers", broker.bootstrap_servers, "--calibration-frames", "20",
                     "--min-agreement", "0", "--output", str(tmp_path / "q"))
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "q" / "accuracy.json").read_text())
    assert report["calibration"] == {"images": 16, "source": f"topic {topics['frames']}", "method": "minmax",
                                     "fp32_layers": "last", "recipe": "reduce-range",
                                     "quantization": "QDQ U8S8 per-channel, 7-bit weights (reduce_range)"}
    assert report["int8_vs_fp32"]["images"] == 4


# --- bad input: one line, exit 2 -----------------------------------------------------------

def test_unknown_model_name(tmp_path):
    assert_one_line_error(run_export("--model", "resnet_nope", "--output", str(tmp_path / "o")),
                          "unknown torchvision classification model 'resnet_nope'")


def test_missing_model_directory(tmp_path):
    assert_one_line_error(run_export("--model", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")),
                          "no such model directory")


def test_a_directory_without_a_model_file(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_export("--model", str(tmp_path / "empty"), "--output", str(tmp_path / "o")),
                          "empty", "no model file")


def test_no_calibration_images(tmp_path, onnx_dir):
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("not an image")
    out = run_export("--model", str(onnx_dir), "--int8", "--calibration-images", str(tmp_path / "none"),
                     "--output", str(tmp_path / "o"))
    assert_one_line_error(out, "found 0 JPEG/PNG images")


def test_unreachable_broker(tmp_path, onnx_dir):
    out = run_export("--model", str(onnx_dir), "--int8", "--calibration-topic", "frames",
                     "--bootstrap-servers", f"127.0.0.1:{free_port()}", "--output", str(tmp_path / "o"))
    assert_one_line_error(out, "cannot reach Kafka at 127.0.0.1:", code=4)


def test_missing_topic(tmp_path, onnx_dir, broker):
    out = run_export("--model", str(onnx_dir), "--int8", "--calibration-topic", "no-such-topic",
                     "--bootstrap-servers", broker.bootstrap_servers, "--output", str(tmp_path / "o"))
    assert_one_line_error(out, "topic 'no-such-topic' does not exist")


def test_output_not_empty(tmp_path, onnx_dir):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    assert_one_line_error(run_export("--model", str(onnx_dir), "--output", str(tmp_path / "o")), "not empty", "--overwrite")
    assert (tmp_path / "o" / "keep.txt").read_text() == "mine"


def test_onnx_cannot_become_torchscript(tmp_path, onnx_dir):
    assert_one_line_error(run_export("--model", str(onnx_dir), "--format", "torchscript", "--output", str(tmp_path / "o")),
                          "can only be written as ONNX")
