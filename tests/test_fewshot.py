import numpy as np
import pytest

from crossgate.datasets import few_shot_split, sample_few_shot
from crossgate.errors import UserError

LABELS = np.repeat(np.arange(5), 30)[np.random.default_rng(0).permutation(150)]


@pytest.mark.parametrize("shots", [1, 2, 4, 16])
def test_class_balanced(shots):
    idx = sample_few_shot(LABELS, shots, seed=1)
    assert len(idx) == len(set(idx.tolist())) == 5 * shots
    assert np.bincount(LABELS[idx]).tolist() == [shots] * 5


def test_deterministic_and_seed_dependent():
    a, b = sample_few_shot(LABELS, 4, seed=1), sample_few_shot(LABELS, 4, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, sample_few_shot(LABELS, 4, seed=2))


def test_validation_has_min_shots_4_per_class_from_val_split():
    val_labels = np.repeat(np.arange(5), 10)
    for shots, per_class in [(1, 1), (2, 2), (4, 4), (8, 4), (16, 4)]:
        split = few_shot_split(LABELS, val_labels, shots, seed=3)
        assert np.bincount(val_labels[split.val]).tolist() == [per_class] * 5
        assert np.bincount(LABELS[split.train]).tolist() == [shots] * 5
        assert split.val.max() < len(val_labels)


def test_short_classes_are_named():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    with pytest.raises(UserError, match="1 classes have fewer than 4 images in the train split: dog"):
        sample_few_shot(labels, 4, seed=1, classnames=["cat", "dog", "eel"])


@pytest.mark.parametrize("shots", [0, -3, "four", 2.5, True])
def test_bad_shots(shots):
    with pytest.raises(UserError, match="shots must be a positive integer"):
        sample_few_shot(LABELS, shots, seed=1)

