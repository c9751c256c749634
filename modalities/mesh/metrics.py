"""Judging point sets the PointFlow way (Yang et al. 2019, as LION and PVD report it), and shape descriptors
a small classifier can learn classes from.

Conventions:
- Every shape is a set of `POINTS` = 2048 points, sampled from its surface and normalised on its own:
  bounding-box centre at the origin, longest side 1.
- Chamfer distance CD(A, B) = mean over a in A of min_b |a - b|² + mean over b in B of min_a |a - b|²
  (squared Euclidean, the sum of the two mean squared nearest distances).
- With S the generated sets and R the reference sets:
  MMD-CD = mean over r in R of min over s in S of CD(r, s) (lower is better);
  COV-CD = share of r in R that are the nearest r of at least one s in S (higher is better);
  1-NNA-CD = leave-one-out accuracy of the 1-nearest-neighbour classifier telling S from R on S ∪ R
  (50% is ideal: the two sets cannot be told apart; 100% means they are disjoint).
"""

from __future__ import annotations

import numpy as np
import trimesh
from rich.progress import Progress
from scipy.spatial import cKDTree

POINTS = 2048
D2_BINS, D1_BINS = 24, 16


def normalise_points(points: np.ndarray) -> np.ndarray:
    """points [N, 3] -> bounding-box centre at the origin, longest side 1 (a single point stays put)."""
    points = np.asarray(points, dtype=np.float64)
    lo, hi = points.min(0), points.max(0)
    extent = float((hi - lo).max())
    return (points - (lo + hi) / 2) / (extent if extent > 0 else 1.0)


def surface_points(mesh: trimesh.Trimesh, seed: int, count: int = POINTS) -> np.ndarray:
    """`count` points sampled uniformly (by area) from the surface, normalised: [count, 3]. An empty mesh
    (a generation with no surface) gives `count` points at the origin, which scores as badly as it
    should."""
    if len(mesh.faces) == 0:
        return np.zeros((count, 3))
    points, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return normalise_points(points)


def chamfer_matrix(
    sets: list[np.ndarray], others: list[np.ndarray] | None = None, progress=None
) -> np.ndarray:
    """Chamfer distances between point sets: [N, M] between `sets` and `others`, or the symmetric [N, N]
    among `sets` (upper triangle computed, then mirrored; the diagonal is 0), with k-d trees: faster here
    than a dense distance matrix in numpy or torch.cdist (docs/performance.md). `progress()` is called once
    per row."""
    symmetric = others is None
    others = sets if symmetric else others
    trees, other_trees = [cKDTree(p) for p in sets], [cKDTree(p) for p in others]
    out = np.zeros((len(sets), len(others)))
    for i, points in enumerate(sets):
        for j in range(i + 1 if symmetric else 0, len(others)):
            out[i, j] = np.mean(other_trees[j].query(points)[0] ** 2) + np.mean(
                trees[i].query(others[j])[0] ** 2
            )
        if progress is not None:
            progress()
    return out + out.T if symmetric else out


def pointflow_scores(
    generated: list[np.ndarray],
    reference: list[np.ndarray],
    progress: Progress | None = None,
    reference_distances: np.ndarray | None = None,
) -> dict[str, float]:
    """{"mmd_cd", "cov_cd", "one_nna_cd"} of generated point sets against reference ones (module
    docstring); MMD is in squared units of the normalised shapes' longest side. `reference_distances`
    (`chamfer_matrix(reference)`, [M, M]) saves recomputing it when several sets are scored against one
    reference."""
    n, m = len(generated), len(reference)
    rows = n + m * (reference_distances is None)
    task = None if progress is None else progress.add_task("Chamfer distances", total=rows)
    advance = None if progress is None else (lambda: progress.advance(task))
    gen_gen = chamfer_matrix(generated, progress=advance)
    gen_ref = chamfer_matrix(generated, reference, progress=advance)
    if reference_distances is None:
        reference_distances = chamfer_matrix(reference, progress=advance)
    if reference_distances.shape != (m, m):
        raise ValueError(f"reference_distances must be [{m}, {m}], got {list(reference_distances.shape)}")
    mmd = gen_ref.min(0).mean()
    coverage = len(np.unique(gen_ref.argmin(1))) / m
    # Leave-one-out 1-NN over S ∪ R: each set's nearest other set must come from the same side.
    distances = np.block([[gen_gen, gen_ref], [gen_ref.T, reference_distances]])
    np.fill_diagonal(distances, np.inf)
    nearest = distances.argmin(1)
    is_generated = np.arange(n + m) < n
    accuracy = np.mean(is_generated[nearest] == is_generated)
    return {"mmd_cd": float(mmd), "cov_cd": float(coverage), "one_nna_cd": float(accuracy)}


def shape_descriptor(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rotation-invariant features of a normalised point set [N, 3] -> [D2_BINS + D1_BINS + 3]: the D2 shape
    distribution (histogram of distances between random point pairs, Osada et al. 2002), the histogram of
    distances to the centroid, and the sorted principal-axis variances. The shapes come in random
    rotations, so a classifier on a voxel grid would have to learn the invariance from few examples."""
    rng = np.random.default_rng(seed)
    subset = points[rng.choice(len(points), size=min(len(points), 512), replace=False)]
    pairs = np.linalg.norm(subset[:, None] - subset[None], axis=-1)[np.triu_indices(len(subset), 1)]
    d2 = np.histogram(pairs, bins=D2_BINS, range=(0.0, np.sqrt(3)))[0] / len(pairs)
    centred = points - points.mean(0)
    d1 = np.histogram(np.linalg.norm(centred, axis=1), bins=D1_BINS, range=(0.0, 0.9))[0] / len(points)
    spread = np.sort(np.linalg.eigvalsh(np.cov(centred, rowvar=False)))
    return np.concatenate([d2, d1, spread * 10])
