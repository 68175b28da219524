"""Classification outputs, TensorSpec shapes and numpy normalization."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rtvi.protocol.types import RequestedOutput, TensorSpec
from rtvi.serving.errors import InvalidInput
from rtvi.serving.modeldir import Preprocessing
from rtvi.serving.normalize import Normalizer
from rtvi.serving.tasks.classification import IMAGES, PIXELS, ClassificationTask, top_indices


def test_top_k_strings_best_first_with_labels():
    task = ClassificationTask(("cat", "dog", "owl"))
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 1.0]], dtype=np.float32)
    (output,) = task.respond(logits, [RequestedOutput("logits", class_count=2)])
    assert (output.datatype, output.shape) == ("BYTES", (2, 2))
    assert output.data == [b"2.000000:1:dog", b"0.100000:0:cat", b"3.000000:0:cat", b"1.000000:2:owl"]
    (raw,) = task.respond(logits, [])
    assert raw.datatype == "FP32" and raw.shape == (2, 3) and raw.data is logits
    with pytest.raises(InvalidInput, match="unknown output 'boxes'"):
        task.respond(logits, [RequestedOutput("boxes")])


@pytest.mark.parametrize(("spec", "shape", "ok"), [
    (IMAGES, [4], True), (IMAGES, [4, 1], True), (IMAGES, [4, 2], False), (IMAGES, [], False),
    (PIXELS, [2, 3, 224, 224], True), (PIXELS, [2, 3, 15, 224], False), (PIXELS, [2, 224, 224, 3], False),
    (TensorSpec("x", "FP32", (-1, 10)), [1, 10], True), (TensorSpec("x", "FP32", (-1, 10)), [1, 9], False),
])
def test_tensor_spec_shapes(spec, shape, ok):
    assert spec.accepts(shape) is ok


def test_normalizer_matches_the_torchvision_formula_in_both_layouts():
    crops = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = (crops / 255.0 - np.array(mean)) / np.array(std)  # NHWC
    nchw = Normalizer(Preprocessing(8, 4, mean, std, "NCHW")).images(crops)
    nhwc = Normalizer(Preprocessing(8, 4, mean, std, "NHWC")).images(crops)
    assert nchw.dtype == np.float32 and nchw.shape == (2, 3, 4, 5) and nchw.flags.c_contiguous
    np.testing.assert_allclose(nchw, expected.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nhwc, expected, rtol=1e-5, atol=1e-5)
    pixels = np.ones((1, 3, 4, 5), dtype=np.float32)
    assert Normalizer(Preprocessing(8, 4, mean, std, "NHWC")).pixels(pixels).shape == (1, 4, 5, 3)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_reused_buffers_hold_the_same_values_and_belong_to_one_thread(layout):
    normalizer = Normalizer(Preprocessing(8, 4, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), layout))
    crops = np.random.default_rng(1).integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    first = normalizer.images_reused(crops)
    np.testing.assert_array_equal(first, normalizer.images(crops))
    smaller = normalizer.images_reused(crops[:2])
    np.testing.assert_array_equal(smaller, normalizer.images(crops[:2]))
    assert smaller.base is first.base and smaller.flags.c_contiguous  # the same memory, no new allocation
    with ThreadPoolExecutor(1) as other_thread:
        elsewhere = other_thread.submit(normalizer.images_reused, crops).result()
    assert not np.shares_memory(elsewhere, first)
    larger = normalizer.images_reused(np.concatenate([crops, crops]))
    assert larger.shape[0] == 6
    np.testing.assert_array_equal(larger[3:], normalizer.images(crops))


@pytest.mark.parametrize("k", [1, 3, 5, 12])
def test_top_indices_order_like_a_stable_descending_sort_with_ties_and_nans(k):
    rng = np.random.default_rng(k)
    logits = rng.integers(-3, 4, (40, 12)).astype(np.float32)  # many ties, also at the k-th place
    logits[rng.random(logits.shape) < 0.1] = np.nan
    logits[0] = np.nan  # fewer than k numbers in a row
    logits[1, :] = 2.0  # all tied
    logits[2, ::2] = np.inf
    expected = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top_indices(logits, k), expected)
    assert top_indices(logits[:0], k).shape == (0, k)
