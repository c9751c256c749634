"""Fréchet distance against closed forms, and the classifier judge on real digits."""

import numpy as np
import pytest

from modalities.common.digits import DigitsDataset
from modalities.common.judges import ClassifierJudge, frechet_distance


def gaussian_sample(mean: np.ndarray, var: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n points [n, D] whose sample mean and (ddof=1) covariance are exactly `mean` and diag(`var`)."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    # Whiten exactly so the closed form applies to the sample itself, not only in expectation.
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False)).T)
    return z * np.sqrt(var) + mean


def test_identical_sets_have_zero_distance():
    a = np.random.default_rng(0).standard_normal((200, 16))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_diagonal_gaussians_match_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, -0.5])
    var1, var2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([2.0, 1.0, 1.0, 0.5])
    a, b = gaussian_sample(mu1, var1, 500, seed=1), gaussian_sample(mu2, var2, 300, seed=2)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_distance_is_symmetric_and_handles_fewer_samples_than_dims():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((20, 64)), rng.standard_normal((30, 64)) + 0.5
    assert np.isfinite(frechet_distance(a, b))
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-5)


def test_distance_rejects_mismatched_dims():
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


def flat(data: DigitsDataset) -> tuple[np.ndarray, np.ndarray]:
    return data.images.flatten(1).numpy(), data.labels.numpy()


def test_judge_classifies_heldout_digits_and_embeds_last_hidden_layer():
    (train_x, train_y), (heldout_x, heldout_y) = flat(DigitsDataset("train")), flat(DigitsDataset("heldout"))
    judge = ClassifierJudge(train_x, train_y)
    assert judge.accuracy(heldout_x, heldout_y) >= 0.97
    features = judge.embed(heldout_x)
    assert features.shape == (len(heldout_x), 64) and (features >= 0).all()
    # The embedding is the network's own last hidden layer: its output layer on it gives the predictions.
    logits = features @ judge.model.coefs_[-1] + judge.model.intercepts_[-1]
    np.testing.assert_array_equal(judge.model.classes_[logits.argmax(1)], judge.predict(heldout_x))
