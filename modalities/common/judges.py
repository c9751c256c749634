"""Modality-agnostic judges of generated samples: the Fréchet distance between two feature sets and a small
classifier trained on real data whose accuracy and hidden features score generations (FID's recipe, with a
judge small enough to train in seconds on any labelled dataset)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.linalg import LinAlgWarning, sqrtm
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets a [N, D] and b [M, D] (N, M >= 2):
    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), the FID formula."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance needs [N, D] and [M, D] features, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"frechet_distance needs at least 2 samples per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        # Singular covariances are the norm (dead relu units, fewer samples than dimensions); scipy warns
        # about them even when the root is fine, and a root that is not is caught below.
        warnings.simplefilter("ignore", LinAlgWarning)
        covmean = sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():
            ridge = eps * np.eye(len(cov_a))
            covmean = sqrtm((cov_a + ridge) @ (cov_b + ridge))
    # The product of two PSD matrices has a real root; an imaginary part is rounding noise.
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    distance = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean)
    # Rounding can push the distance of (near-)identical sets a hair below zero.
    return max(float(distance), 0.0)


class ClassifierJudge:
    """An MLP classifier trained on real features [N, D] with integer labels [N].

    Inputs are standardised with statistics of the training set. `embed` gives the last hidden layer, the
    feature space in which `frechet_distance` compares generated and real sets.
    """

    def __init__(
        self, features: np.ndarray, labels: np.ndarray, hidden: tuple[int, ...] = (128, 64), seed: int = 0
    ) -> None:
        features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
        if features.ndim != 2 or labels.shape != (len(features),):
            raise ValueError(
                f"ClassifierJudge needs features [N, D] and labels [N], "
                f"got {features.shape} and {labels.shape}"
            )
        self.scaler = StandardScaler().fit(features)
        # adam with a fixed random_state is deterministic; 500 epochs is far past convergence on digits (~80).
        self.model = MLPClassifier(
            hidden_layer_sizes=hidden, activation="relu", max_iter=500, random_state=seed
        )
        # The matrices are tiny, so BLAS threads only add synchronisation: 1 s becomes 10-30 s on a busy box.
        with threadpool_limits(limits=1, user_api="blas"):
            self.model.fit(self.scaler.transform(features), labels)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class labels [N] for features x [N, D]."""
        return self.model.predict(self.scaler.transform(np.asarray(x, dtype=np.float64)))

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Fraction of x [N, D] classified as y [N]."""
        return float(np.mean(self.predict(x) == np.asarray(y)))

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Last hidden layer's relu activations [N, hidden[-1]] for features x [N, D]."""
        h = self.scaler.transform(np.asarray(x, dtype=np.float64))
        # sklearn exposes only predictions, so replay the hidden layers from the fitted weights.
        for weight, bias in zip(self.model.coefs_[:-1], self.model.intercepts_[:-1], strict=True):
            h = np.maximum(h @ weight + bias, 0.0)
        return h
