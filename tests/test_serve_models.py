"""`rtvi serve` of model directories: a repository of several models, every engine, bad directories.

Models are torchvision architectures with seeded random weights, exported in the test
(ONNX, TorchScript, torch.export); what the server returns through tritonclient is
compared with the same module run in torch on the same crops, so a normalization,
colour-order or layout bug in any engine's path fails here.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from conftest import InferenceServer, Proc, free_port, jpeg_bytes, rtvi_command
from support.model_dirs import export_onnx, export_program, export_torchscript, labels, seeded, write_dir

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
MODELS = {  # name -> (architecture, classes, writer, engine)
    "onnx-resnet18": ("resnet18", 8, export_onnx, "onnxruntime"),
    "ts-mobilenet": ("mobilenet_v3_small", 10, export_torchscript, "torch"),
    "pt2-mobilenet": ("mobilenet_v3_small", 6, export_program, "torch"),
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


def test_repository_serves_each_model_under_its_folder_name(repository_server):
    with triton.InferenceServerClient(repository_server.address) as client:
        for name, (_, classes, _, engine) in MODELS.items():
            assert client.is_model_ready(name)
            config = client.get_model_config(name, as_json=True)["config"]
            parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
            assert parameters["engine"] == engine and parameters["precision"] == "fp32"
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
        engine = MODELS[name][3]
        assert (f'rtvi_inference_model_info{{device="cpu",engine="{engine}",instances="1",model="{name}",'
                'precision="fp32",threads="') in metrics
    log = repository_server.proc.output
    assert "model onnx-resnet18: engine=onnxruntime" in log and "engine onnxruntime: an ONNX model" in log


def test_onnx_model_serves_without_torch(tmp_path, repository):
    """An ONNX model needs no torch: the server runs with torch made unimportable."""
    blocker = tmp_path / "blocked"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text('raise ImportError("torch is blocked in this test")\n')
    srv = InferenceServer(tmp_path, "--model", str(repository / "onnx-resnet18"), "--max-batch-size", "4",
                          env={"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])})
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
            parameters = client.get_model_config(name, as_json=True)["config"]["parameters"]
            assert parameters["engine"]["string_value"] == engine
            assert parameters["precision"]["string_value"] == "fp32"
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
    errors = [line for line in proc.output.splitlines() if " ERROR " in line]
    assert len(errors) == 1, proc.output
    assert f"{directory / file}".rstrip("/") + ":" in errors[0], errors[0]
    assert problem.format(dir=directory) in errors[0], errors[0]
    assert "Traceback" not in proc.output
