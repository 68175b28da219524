"""The check set a model directory carries: its file, and the agreement measured against it."""

from __future__ import annotations

import numpy as np
import pytest

from rtvi.serving.checkset import CHECKSET_FILE, CheckSet, compare, evaluate, load_checkset
from rtvi.serving.errors import ModelLoadError

CROP, CLASSES = 8, 3


def checkset(n: int = 4, minimum: float = 0.75) -> CheckSet:
    rng = np.random.default_rng(0)
    logits = np.eye(CLASSES, dtype=np.float32)[np.arange(n) % CLASSES] * 5
    return CheckSet(rng.integers(0, 256, (n, CROP, CROP, 3), dtype=np.uint8), logits, minimum)


def test_compare_counts_top1_agreement_and_logit_deltas():
    reference = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 5.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    candidate = reference.copy()
    candidate[1] = [0.0, 1.0, 1.5]  # top-1 moves from 1 to 2; largest delta 1.0
    candidate[2, 2] = 4.75
    result = compare(reference, candidate)
    assert result["images"] == 4 and result["top1_agreement"] == 0.75
    assert result["max_abs_logit_delta"] == pytest.approx(1.0)
    assert result["mean_abs_logit_delta"] == pytest.approx((1.0 + 0.5 + 0.25) / 12)


def test_saved_check_set_loads_back(tmp_path):
    saved = checkset()
    saved.save(tmp_path)
    loaded = load_checkset(tmp_path, CROP, CLASSES)
    assert loaded is not None and loaded.min_agreement == 0.75
    np.testing.assert_array_equal(loaded.crops, saved.crops)
    np.testing.assert_array_equal(loaded.logits, saved.logits)


def test_a_directory_without_a_check_set_has_none(tmp_path):
    assert load_checkset(tmp_path, CROP, CLASSES) is None


@pytest.mark.parametrize(("crop", "classes", "message"), [
    (16, CLASSES, "crops must be uint8 [N, 16, 16, 3]"),
    (CROP, 5, "logits must be [4, 5]"),
])
def test_a_check_set_that_does_not_fit_the_model_is_refused(tmp_path, crop, classes, message):
    checkset().save(tmp_path)
    with pytest.raises(ModelLoadError, match=message.replace("[", r"\[")):
        load_checkset(tmp_path, crop, classes)


def test_a_corrupt_check_set_is_one_error(tmp_path):
    (tmp_path / CHECKSET_FILE).write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match=f"{CHECKSET_FILE}: not a check set"):
        load_checkset(tmp_path, CROP, CLASSES)


def test_agreement_at_the_minimum_passes_and_below_fails():
    reference = checkset(minimum=0.75)
    served = reference.logits.copy()
    served[0] = [0, 0, 9]  # one of four flips: 0.75
    result = evaluate(reference, served)
    assert (result.images, result.agreement, result.passed) == (4, 0.75, True)
    assert "0.750 on 4 check-set images (minimum 0.75)" in result.describe()
    served[1] = [9, 0, 0]
    assert not evaluate(reference, served).passed
