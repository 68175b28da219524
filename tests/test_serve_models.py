"""`rtvi serve` of model directories and torchvision names: a repository of several models,
every engine, the engine chosen by measurement, torchvision names through the ONNX model
cache, bad directories and a model whose check set fails on this CPU.

Models are torchvision architectures with seeded random weights, exported in the test
(ONNX, TorchScript, torch.export); what the server returns through tritonclient is
compared with the same module run in torch on the same crops, so a normalization,
colour-order or layout bug in any engine's path fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from conftest import InferenceServer, Proc, free_port, jpeg_bytes, metric_sum, rtvi_command
from support.photos import SKIMAGE_DATA
from support.model_dirs import SmallNet, export_onnx, export_program, export_torchscript, labels, seeded, write_dir

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
ONNX_ENGINES = ("onnxruntime", "openvino")
MODELS = {  # name -> (architecture, classes, writer, engines that may serve it with --engine auto)
    "onnx-resnet18": ("resnet18", 8, export_onnx, ONNX_ENGINES),  # both timed at load; the faster serves
    "ts-mobilenet": ("mobilenet_v3_small", 10, export_torchscript, ("torch",)),
    "pt2-mobilenet": ("mobilenet_v3_small", 6, export_program, ("torch",)),
}
FILES = {export_onnx: "model.onnx", export_torchscript: "model.pt", export_program: "model.pt2"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    for name, (architecture, classes, writer, _) in MODELS.items():
        directory = write_dir(root / name, labels(classes, prefix=name))
        writer(seeded(architecture, classes), directory / FILES[writer])
    return root


def reference_logits(name: str, images: list[bytes]) -> np.ndarray:
    """The model in torch on rtvi's own crops, normalized the torchvision way."""
    from rtvi.serving.preprocess import ImageGeometry  # numpy + OpenCV only: no protobuf stubs

    architecture, classes, _, _ = MODELS[name]
    crops = ImageGeometry(resize=256, crop=224).batch(images)
    batch = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
    with torch.inference_mode():
        return seeded(architecture, classes)(batch).numpy()


def images_input(images: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput("images", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


def served_logits(client, name: str, images: list[bytes]) -> np.ndarray:
    result = client.infer(name, [images_input(images)], outputs=[triton.InferRequestedOutput("logits")])
    return result.as_numpy("logits")


def assert_same_model(client, name: str) -> None:
    images = [jpeg_bytes(seed=i) for i in range(3)]
    served = served_logits(client, name, images)
    expected = reference_logits(name, images)
    assert served.shape == expected.shape
    np.testing.assert_allclose(served, expected, rtol=2e-3, atol=2e-3)


@pytest.fixture(scope="module")
def repository_server(tmp_path_factory, repository):
    srv = InferenceServer(tmp_path_factory.mktemp("repo-server"), "--model-repository", str(repository),
                          "--precision", "fp32", "--max-batch-size", "4", "--instances", "1")
    try:
        srv.wait_serving(timeout=240)
        yield srv
    finally:
        srv.proc.terminate()


def parameters_of(client, name: str) -> dict[str, str]:
    config = client.get_model_config(name, as_json=True)["config"]
    return {key: value["string_value"] for key, value in config["parameters"].items()}


def test_repository_serves_each_model_under_its_folder_name(repository_server):
    with triton.InferenceServerClient(repository_server.address) as client:
        for name, (_, classes, _, engines) in MODELS.items():
            assert client.is_model_ready(name)
            config = client.get_model_config(name, as_json=True)["config"]
            parameters = parameters_of(client, name)
            assert parameters["engine"] in engines and parameters["precision"] == "fp32"
            assert parameters["device"] == "cpu" and parameters["instances"] == "1"
            assert config["instance_group"][0]["count"] == 1 and config["max_batch_size"] == 4
            assert config["output"][0]["dims"] == [str(classes)]
            top = client.infer(name, [images_input([jpeg_bytes()])],
                               outputs=[triton.InferRequestedOutput("logits", class_count=3)]).as_numpy("logits")
            assert top.shape == (1, 3)
            assert all(entry.decode().split(":", 2)[2].startswith(f"{name}-") for entry in top[0])
            assert_same_model(client, name)
        with pytest.raises(InferenceServerException) as info:
            client.is_model_ready("resnet18")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        for name in MODELS:
            assert repr(name) in info.value.message()
    metrics = repository_server.metrics_text()
    for name in MODELS:
        assert re.search(rf'^rtvi_inference_requests_total\{{model="{name}",status="OK"\}} [1-9]', metrics, re.M), name
        assert f'rtvi_inference_model_ready{{model="{name}"}} 1.0' in metrics
        assert metric_sum(metrics, "rtvi_inference_model_info", model=name, device="cpu", instances="1",
                          precision="fp32") == 1, name
    for name in ("ts-mobilenet", "pt2-mobilenet"):
        assert metric_sum(metrics, "rtvi_inference_model_info", model=name, engine="torch",
                          engine_choice="the only candidate", engine_trial="") == 1


def test_the_faster_onnx_engine_is_measured_and_reported(repository_server):
    """ONNX Runtime and OpenVINO both run the ONNX model: each was timed at load, and the faster serves."""
    pytest.importorskip("openvino")
    with triton.InferenceServerClient(repository_server.address) as client:
        parameters = parameters_of(client, "onnx-resnet18")
    trial = dict(entry.split("=") for entry in parameters["engine_trial"].split(","))
    assert set(trial) == set(ONNX_ENGINES) and all(float(rate) > 0 for rate in trial.values())
    assert parameters["engine_choice"] == "measured"
    assert parameters["engine"] == max(trial, key=lambda engine: float(trial[engine]))
    metrics = repository_server.metrics_text()
    assert metric_sum(metrics, "rtvi_inference_model_info", model="onnx-resnet18", engine=parameters["engine"],
                      engine_choice="measured", engine_trial=parameters["engine_trial"]) == 1
    for engine, rate in trial.items():
        figure = metric_sum(metrics, "rtvi_inference_engine_trial_images_per_second", model="onnx-resnet18", engine=engine)
        assert figure == pytest.approx(float(rate), abs=0.06)


def torch_blocked(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import torch` fails."""
    blocker = tmp_path / "blocked"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text('raise ImportError("torch is blocked in this test")\n')
    return {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}


def test_onnx_model_serves_without_torch(tmp_path, repository):
    """An ONNX model needs no torch: the server runs with torch made unimportable."""
    srv = InferenceServer(tmp_path, "--model", str(repository / "onnx-resnet18"), "--max-batch-size", "4",
                          "--engine", "onnxruntime", env=torch_blocked(tmp_path))
    # precision auto: the fp32 graph runs as stored, even on a CPU with native bf16
    assert_serves_the_same_model(srv, "onnx-resnet18", "onnxruntime")
    assert "torch is blocked" not in srv.proc.output


def test_openvino_engine_serves_the_onnx_model(tmp_path, repository):
    pytest.importorskip("openvino")
    srv = InferenceServer(tmp_path, "--model", str(repository / "onnx-resnet18"), "--engine", "openvino",
                          "--precision", "fp32", "--max-batch-size", "4")
    assert_serves_the_same_model(srv, "onnx-resnet18", "openvino")


def assert_serves_the_same_model(srv: InferenceServer, name: str, engine: str) -> None:
    """Start ``srv``, check it serves ``name`` in fp32 on ``engine`` like torch does, stop it cleanly."""
    try:
        srv.wait_serving()
        with triton.InferenceServerClient(srv.address) as client:
            assert_same_model(client, name)
            parameters = parameters_of(client, name)
            assert parameters["engine"] == engine and parameters["engine_choice"] == "asked for"
            assert parameters["precision"] == "fp32"
    finally:
        assert srv.proc.terminate() == 0, srv.proc.output


# --- bad model directories: one line at start, naming the file and the problem -------------

class Tiny(torch.nn.Module):
    """Four classes from a 3x3 convolution; ``flat=False`` outputs [N, 4, 1, 1] instead."""

    def __init__(self, flat: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.flat = flat

    def forward(self, x):
        y = torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 1)
        return y.flatten(1) if self.flat else y


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    directory = write_dir(tmp_path_factory.mktemp("tiny") / "tiny", labels(4), "resize: 40\ncrop: 32\n"
                          "mean: [0.5, 0.5, 0.5]\nstd: [0.25, 0.25, 0.25]\n")
    export_onnx(Tiny(), directory / "model.onnx", size=32)
    return directory


def _torchscript_instead(directory: Path) -> None:
    (directory / "model.onnx").unlink()
    (directory / "model.pt").write_bytes(b"PK\x03\x04 truncated zip")


BAD_DIRECTORIES = {  # case -> (how to break the good directory, file named, problem stated)
    "missing_labels": (lambda d: (d / "labels.txt").unlink(), "labels.txt", "missing (one label per line"),
    "empty_labels": (lambda d: (d / "labels.txt").write_text("\n"), "labels.txt", "empty (one label per line"),
    "label_count": (lambda d: (d / "labels.txt").write_text("a\nb\nc\n"), "labels.txt",
                    "3 labels but {dir}/model.onnx outputs 4 classes"),
    "corrupt_onnx": (lambda d: (d / "model.onnx").write_bytes(b"not a protobuf" * 10), "model.onnx",
                     "cannot load as an ONNX model"),
    "corrupt_torchscript": (_torchscript_instead, "model.pt", "cannot load as a TorchScript model"),
    "missing_config_key": (
        lambda d: (d / "config.yaml").write_text("resize: 40\nmean: [0.5, 0.5, 0.5]\nstd: [0.25, 0.25, 0.25]\n"),
        "config.yaml", "missing key 'crop'"),
    "output_not_n_by_classes": (lambda d: export_onnx(Tiny(flat=False), d / "model.onnx", size=32), "model.onnx",
                                "output shape [1, 4, 1, 1] for a batch of 1 is not [N, classes]"),
    "no_model_file": (lambda d: (d / "model.onnx").unlink(), "",
                      "no model file (expected one of model.onnx, model.pt2, model.pt)"),
}


def error_lines(output: str) -> list[str]:
    """The lines that report a failure: `rtvi serve`'s one error line (cli.main) and any ERROR log line."""
    return [line for line in output.splitlines() if line.startswith("rtvi serve: ") or " ERROR " in line]


@pytest.mark.parametrize("case", BAD_DIRECTORIES)
def test_bad_model_directory_fails_at_start_with_one_line(tmp_path, tiny_dir, case):
    directory = tmp_path / "repo" / "tiny"
    shutil.copytree(tiny_dir, directory)
    break_it, file, problem = BAD_DIRECTORIES[case]
    break_it(directory)
    proc = Proc(rtvi_command("serve", "--host", "127.0.0.1", "--port", str(free_port()), "--metrics-port", "0",
                             "--model-repository", str(tmp_path / "repo")), tmp_path / "serve.log")
    try:
        assert proc.popen.wait(180) == 2, proc.output
    finally:
        proc.kill()
    errors = error_lines(proc.output)
    assert len(errors) == 1, proc.output
    assert f"{directory / file}".rstrip("/") + ":" in errors[0], errors[0]
    assert problem.format(dir=directory) in errors[0], errors[0]
    assert "Traceback" not in proc.output


# --- torchvision names: exported to ONNX once, then served without torch ---------------

def served_pixels_logits(address: str, name: str, pixels: np.ndarray) -> np.ndarray:
    tensor = triton.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    with triton.InferenceServerClient(address) as client:
        return client.infer(name, [tensor], outputs=[triton.InferRequestedOutput("logits")]).as_numpy("logits")


def test_a_torchvision_name_is_exported_once_then_served_as_onnx_without_torch(tmp_path, checkpoint):
    import torchvision

    cache = tmp_path / "model-cache"
    flags = ("--model", "resnet18", "--weights", str(checkpoint), "--model-cache", str(cache), "--precision", "fp32",
             "--max-batch-size", "4")
    pixels = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    reference = torchvision.models.resnet18(weights=None)
    reference.load_state_dict(torch.load(checkpoint, weights_only=True))
    with torch.inference_mode():
        expected = reference.eval()(torch.from_numpy(pixels)).numpy()

    first = InferenceServer(tmp_path, *flags)
    try:
        first.wait_serving(timeout=300)  # the export runs once, here
        with triton.InferenceServerClient(first.address) as client:
            parameters = parameters_of(client, "resnet18")
        served = served_pixels_logits(first.address, "resnet18", pixels)
    finally:
        assert first.proc.terminate() == 0, first.proc.output
    (entry,) = cache.iterdir()
    assert entry.name.startswith("resnet18-sha256-") and parameters["artifact"] == str(entry / "model.onnx")
    assert parameters["source"] == "onnx" and parameters["engine"] in ONNX_ENGINES
    parity = json.loads((entry / "accuracy.json").read_text())["export_vs_torch"]
    assert parity["top1_agreement"] == 1.0 and parity["max_abs_logit_delta"] < 1e-2
    np.testing.assert_allclose(served, expected, rtol=1e-3, atol=1e-3)

    again = InferenceServer(tmp_path, *flags, env=torch_blocked(tmp_path))
    try:
        again.wait_serving(timeout=120)
        np.testing.assert_allclose(served_pixels_logits(again.address, "resnet18", pixels), served, rtol=1e-4, atol=1e-4)
    finally:
        assert again.proc.terminate() == 0, again.proc.output
    assert "torch is blocked" not in again.proc.output


@pytest.mark.parametrize(("engine", "source"), [("torch", "torchvision"), ("onnxruntime", "onnx")])
def test_engine_flag_still_forces_one_engine_for_a_torchvision_name(tmp_path, engine, source):
    srv = InferenceServer(tmp_path, "--model", "resnet18", "--engine", engine, "--max-batch-size", "4", "--instances", "1")
    try:
        srv.wait_serving(timeout=300)
        with triton.InferenceServerClient(srv.address) as client:
            parameters = parameters_of(client, "resnet18")
    finally:
        assert srv.proc.terminate() == 0, srv.proc.output
    assert (parameters["engine"], parameters["source"], parameters["engine_choice"]) == (engine, source, "asked for")
    assert "engine_trial" not in parameters


# --- a model whose check set fails on this CPU: refused at load with one line -----------

@pytest.fixture(scope="module")
def mis_quantized(tmp_path_factory) -> Path:
    """An int8 directory whose model.onnx was quantized with activation ranges 50x too narrow
    (a broken calibration), beside the check set its good export wrote (calibrated on real photos:
    on synthetic frames this small net's logits are near ties)."""
    from rtvi.export import Preprocessing, export, export_module
    from rtvi.export.config import ExportConfig
    from rtvi.export.quantize import quantize_int8

    root = tmp_path_factory.mktemp("mis-quantized")
    images = root / "images"
    images.mkdir()
    for photo in sorted(SKIMAGE_DATA.glob("*.png"))[:20]:
        shutil.copy(photo, images / photo.name)
    small = Preprocessing(resize=40, crop=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    export_module(SmallNet(), root / "fp32", labels=labels(5), preprocessing=small)
    report = export(ExportConfig(model=str(root / "fp32"), int8=True, calibration_images=str(images), holdout_every=2,
                                 output=str(root / "lite-int8")))
    assert report["check_set"]["images"] == 10 and report["check_set"]["top1_agreement"] >= 0.98, report
    narrow = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32) * 0.02
    quantize_int8(root / "fp32" / "model.onnx", root / "lite-int8" / "model.onnx", narrow, method="minmax",
                  fp32_layers="none", batch_size=8)
    return root / "lite-int8"


def test_a_mis_quantized_model_is_refused_at_load_with_one_line(tmp_path, mis_quantized):
    proc = Proc(rtvi_command("serve", "--host", "127.0.0.1", "--port", str(free_port()), "--metrics-port", "0",
                             "--model", str(mis_quantized)), tmp_path / "serve.log")
    try:
        assert proc.popen.wait(180) == 2, proc.output
    finally:
        proc.kill()
    errors = error_lines(proc.output)
    assert len(errors) == 1 and "Traceback" not in proc.output, proc.output
    from rtvi.serving.hardware import cpu_info

    for fragment in ("model lite-int8: accuracy below the model directory's minimum on this CPU",
                     cpu_info().describe(), "top-1 agreement with fp32", "check-set images (minimum 0", "rtvi export --int8",
                     "--on-accuracy-drop warn"):
        assert fragment in errors[0], errors[0]


def test_on_accuracy_drop_warn_serves_it_and_reports_the_agreement(tmp_path, mis_quantized):
    srv = InferenceServer(tmp_path, "--model", str(mis_quantized), "--on-accuracy-drop", "warn", "--instances", "1")
    try:
        srv.wait_serving()
        with triton.InferenceServerClient(srv.address) as client:
            parameters = parameters_of(client, "lite-int8")
        agreement = metric_sum(srv.metrics_text(), "rtvi_inference_check_agreement", model="lite-int8")
    finally:
        assert srv.proc.terminate() == 0, srv.proc.output
    assert parameters["check_passed"] == "false" and parameters["check_images"] == "10"
    assert float(parameters["check_agreement"]) == pytest.approx(agreement, abs=1e-4) and agreement < 0.98
    assert "serving anyway" in srv.proc.output
