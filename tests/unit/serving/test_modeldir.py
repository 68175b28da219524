"""Model directory checks: every problem is one error naming the file (the model file is not loaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtvi.serving.errors import ModelLoadError
from rtvi.serving.modeldir import Preprocessing, load_directory, repository_entries

CONFIG = "resize: 256\ncrop: 224\nmean: [0.485, 0.456, 0.406]\nstd: [0.229, 0.224, 0.225]\n"


def make(tmp_path: Path, config: str = CONFIG, labels: str = "cat\ndog\n", files=("model.onnx",)) -> Path:
    directory = tmp_path / "m"
    directory.mkdir()
    for name in files:
        (directory / name).write_bytes(b"\0")
    (directory / "labels.txt").write_text(labels)
    (directory / "config.yaml").write_text(config)
    return directory


def test_a_good_directory(tmp_path):
    source = load_directory(make(tmp_path, CONFIG + "input_name: x\nlayout: NHWC\nprecision: int8\n", "cat\ndog\n\n"))
    assert source.format == "onnx" and source.labels == ("cat", "dog")
    assert source.preprocessing == Preprocessing(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "NHWC")
    assert (source.input_name, source.stored_precision) == ("x", "int8")


@pytest.mark.parametrize(("file", "format"), [("model.pt", "torchscript"), ("model.pt2", "torch_export")])
def test_torch_formats(tmp_path, file, format):
    assert load_directory(make(tmp_path, files=(file,))).format == format


BAD = {
    "no model": ({"files": ()}, "m: no model file"),
    "two models": ({"files": ("model.onnx", "model.pt")}, "m: holds model.onnx and model.pt; keep exactly one"),
    "empty labels": ({"labels": ""}, "labels.txt: empty"),
    "blank label": ({"labels": "cat\n\ndog\n"}, "labels.txt: line 2 is empty"),
    "missing key": ({"config": "resize: 256\nmean: [0, 0, 0]\nstd: [1, 1, 1]\n"}, "config.yaml: missing key 'crop'"),
    "not yaml": ({"config": "resize: [256\n"}, "config.yaml: not readable YAML"),
    "not a mapping": ({"config": "- 1\n"}, "config.yaml: must be a mapping"),
    "bad crop": ({"config": CONFIG.replace("crop: 224", "crop: -1")}, "config.yaml: crop must be a positive integer"),
    "crop > resize": ({"config": CONFIG.replace("crop: 224", "crop: 300")}, "crop (300) must not exceed resize (256)"),
    "two means": ({"config": CONFIG.replace("[0.485, 0.456, 0.406]", "[0.5, 0.5]")}, "mean must be three numbers"),
    "zero std": ({"config": CONFIG.replace("0.229", "0")}, "std must be three positive numbers"),
    "bad layout": ({"config": CONFIG + "layout: CHW\n"}, "layout must be one of NCHW, NHWC"),
    "bad precision": ({"config": CONFIG + "precision: int4\n"}, "precision must be one of fp32, fp16, int8"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_directories(tmp_path, case):
    kwargs, message = BAD[case]
    with pytest.raises(ModelLoadError) as info:
        load_directory(make(tmp_path, **kwargs))
    assert message in str(info.value)
    assert str(tmp_path / "m") in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_labels_and_config(tmp_path):
    directory = make(tmp_path)
    (directory / "config.yaml").unlink()
    with pytest.raises(ModelLoadError, match="config.yaml: missing"):
        load_directory(directory)
    (directory / "labels.txt").unlink()
    with pytest.raises(ModelLoadError, match="labels.txt: missing"):
        load_directory(directory)


def test_repository_entries_are_the_folders(tmp_path):
    for name in ("b", "a", ".hidden"):
        (tmp_path / name).mkdir()
    (tmp_path / "README").write_text("")
    assert list(repository_entries(tmp_path)) == ["a", "b"]
    with pytest.raises(ModelLoadError, match="holds no model directories"):
        repository_entries(tmp_path / "a")
