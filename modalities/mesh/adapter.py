"""3D meshes as tokens, through one of two tokenizers a recipe chooses (`tokenizer:`):

- "sdf": a truncated signed-distance grid (R³ cells, `modalities/mesh/sdf.py`) cut into p³ blocks, one token
  per block with 3D RoPE; samples decode by marching cubes into watertight meshes (OBJ and GLB files).
  With `codec` = a mesh codec-stage export, the tokens are p³ blocks of the codec's latents instead
  (`modalities/mesh/codec_tokenizer.py`), decoded by the codec into the grid.
- "points": N surface samples as an unordered set of tokens without positions (Point-E); samples are point
  clouds (PLY files).

Dataset items, `load` and `decode` give the tokenizer's media: grids [1, R, R, R] or points [N, 3|6].
Meshes are normalised into the unit cube first (the datasets keep each item's centre and scale).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import trimesh
from rich.progress import Progress
from safetensors import safe_open
from safetensors.numpy import save_file
from torch import Tensor
from torch.utils.data import Dataset

from mmdit.cache import cache_key
from mmdit.contract import ModalityAdapter, StreamSpec, Tokens
from modalities.common.folders import folder_source
from modalities.common.judges import ClassifierJudge
from modalities.common.splits import SPLITS, matching_subset
from modalities.mesh.codec_tokenizer import SdfCodecTokenizer
from modalities.mesh.datasets import MESH_SUFFIXES, MeshFolder, ShapesDataset, read_mesh
from modalities.mesh.metrics import (
    POINTS,
    chamfer_matrix,
    normalise_points,
    pointflow_scores,
    shape_descriptor,
    surface_points,
)
from modalities.mesh.points import PointTokenizer
from modalities.mesh.sdf import SdfTokenizer, normalise

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # noqa: E402

TOKENIZERS = ("sdf", "points")
SURFACE_WEIGHT = 10.0  # a codec's loss counts a cell within the truncation band this many times over
MARGIN = 0.1  # empty border of the unit cube around every normalised mesh (1.6 cells of a 16³ grid)
LIGHT = np.array([0.4, -0.5, 0.75]) / np.linalg.norm([0.4, -0.5, 0.75])
CAMERA = {"elev": 25, "azim": -60}  # fixed, so previews of different runs compare
REFERENCE_VERSION = 1  # bump when evaluation's treatment of the real data changes, so caches are redone


class MeshAdapter(ModalityAdapter):
    """Meshes through the "sdf" tokenizer (options resolution, patch_size, truncation in cells, and codec:
    a mesh codec export whose latents the tokens carry, patch_size then in latent cells) or the "points"
    tokenizer (options points, normals); see the module docstring."""

    name = "mesh"
    file_suffix = ".obj"
    read_suffixes = MESH_SUFFIXES

    def __init__(
        self,
        tokenizer: str = "sdf",
        resolution: int = 16,
        patch_size: int = 4,
        truncation: float = 3.0,
        points: int = POINTS,
        normals: bool = False,
        codec: str | None = None,
    ) -> None:
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"mesh tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
        if codec is not None and tokenizer != "sdf":
            raise ValueError(f"a mesh codec encodes SDF grids: tokenizer 'sdf' takes it, not {tokenizer!r}")
        self.tokenizer: SdfTokenizer | SdfCodecTokenizer | PointTokenizer
        if tokenizer == "points":
            self.tokenizer = PointTokenizer(points, normals)
        elif codec is None:
            self.tokenizer = SdfTokenizer(resolution, patch_size, truncation)
        else:
            self.tokenizer = SdfCodecTokenizer(codec, resolution, patch_size, truncation)
        self.file_suffix = ".obj" if tokenizer == "sdf" else ".ply"

    @property
    def sample_suffixes(self) -> tuple[str, ...]:
        """Meshes are written for Blender / MeshLab as OBJ and GLB; point clouds as PLY."""
        return (".obj", ".glb") if not isinstance(self.tokenizer, PointTokenizer) else (".ply",)

    def stream(self, name: str) -> StreamSpec:
        return self.tokenizer.stream(name)

    def encoding_identity(self) -> dict[str, Any]:
        """The codec file's digest with a codec (cached tokens of another codec are stale), else nothing."""
        return self.tokenizer.identity() if isinstance(self.tokenizer, SdfCodecTokenizer) else {}

    def reconstruction_loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """A codec stage's loss between grids [B, 1, R, R, R]: the mean absolute error with every cell of the
        truncation band (|target| < 1, where the surface is; most cells are clipped to ±1) weighted
        `SURFACE_WEIGHT` times a clipped one."""
        weight = 1 + (SURFACE_WEIGHT - 1) * (target.abs() < 1).to(prediction.dtype)
        return (weight * (prediction - target).abs()).sum() / weight.sum()

    def encode(self, media: Tensor, numbers=None) -> Tokens:
        """Grids [B, 1, R, R, R] or point sets [B, N, 3|6] -> Tokens (`numbers` is not used by meshes)."""
        return self.tokenizer.encode(media)

    def decode(self, tokens: Tokens) -> Tensor:
        return self.tokenizer.decode(tokens)

    def layout(self, batch_size: int, numbers=None) -> Tokens:
        """Zeros, positions and mask for `batch_size` grids / point sets of the adapter's size."""
        return self.tokenizer.layout(batch_size)

    def load(self, path: str | Path) -> Tensor:
        """A mesh file -> the tokenizer's media (grid [1, R, R, R] or points [N, 3|6]), normalised into the
        unit cube. Unreadable, empty, point-cloud or NaN files are errors naming the file."""
        mesh, _, _ = normalise(read_mesh(path), MARGIN)
        return self.tokenizer.from_mesh(mesh, str(path))

    def save(self, item: Tensor, path: str | Path) -> Path:
        """A grid [1, R, R, R] -> its marching-cubes mesh, or points [N, 3|6] -> a point cloud, written in
        the format of `path`'s suffix (.obj, .glb, .ply, .stl, .off). A grid without a surface writes an
        empty mesh file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer.geometry(item).export(path)
        return path

    def preview(self, media: Tensor, path: str | Path, columns: int | None = None) -> Path:
        """A PNG grid of shaded renders (meshes) or scatter plots (points), `columns` wide (default
        ceil(sqrt(B))), all from one fixed camera over the unit cube."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cols = columns or math.ceil(math.sqrt(len(media)))
        rows = math.ceil(len(media) / cols)
        fig = plt.figure(figsize=(2 * cols, 2 * rows), dpi=80)
        for i, item in enumerate(media.detach().float().cpu()):
            ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
            _draw(ax, self.tokenizer.geometry(item))
        fig.subplots_adjust(0, 0, 1, 1, 0, 0)
        fig.savefig(path)
        plt.close(fig)
        return path

    def dataset(self, source: str | Mapping[str, Any], split: str, seed: int = 0) -> Dataset:
        """Source "shapes" (the bundled primitives: one fixed set, whatever `seed`) or {"folder": PATH,
        "label": NAME} (a user's mesh files, split by `seed`); split "train" or "heldout". Encodings are
        cached (see `modalities/mesh/datasets.py`)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        tok = self.tokenizer
        if source == "shapes":
            return ShapesDataset(split, tok.from_mesh, tok.settings, MARGIN)
        folder = folder_source(source, "mesh", bundled=["shapes"])
        return MeshFolder(
            folder.path, split, tok.from_mesh, tok.settings, MARGIN, seed=seed, label=folder.label
        )

    def evaluate(
        self, generated: Tensor, labels: Mapping[str, Tensor], train: Dataset, heldout: Dataset
    ) -> dict[str, dict[str, float]]:
        """PointFlow's MMD-CD, COV-CD and 1-NNA-CD (`modalities/mesh/metrics.py`) of the generated shapes
        against the held-out meshes; the share of watertight generated meshes (sdf); and, for labelled
        data, the accuracy of a classifier trained on the train meshes' shape descriptors at telling the
        requested class. The reference row scores a train subset with held-out's class counts against
        held-out in the same way (and held-out itself for accuracy and watertightness). The real data's
        part is computed once per dataset pair and cached (`_reference`), so a later evaluation only
        samples points from the generated meshes and compares them (~14k Chamfer pairs for 96 samples)."""
        items = generated.detach().float().cpu()
        generated_points = [self._points(item, seed=i) for i, item in enumerate(items)]
        real = self._reference(train, heldout)
        heldout_points = list(real["heldout_points"])
        with Progress(transient=True) as progress:
            scores = pointflow_scores(generated_points, heldout_points, progress, real["heldout_distances"])
        scores["samples"] = len(items)
        if not isinstance(self.tokenizer, PointTokenizer):
            scores["watertight"] = _watertight_share(self.tokenizer, items)
        key = next(iter(train.classes), None)
        if key is not None and key in labels:
            judge = ClassifierJudge(real["train_descriptors"], train.labels.numpy())
            scores["accuracy"] = judge.accuracy(_descriptors(generated_points), labels[key].cpu().numpy())
        return {"generated": scores, "reference": real["row"]}

    def _reference(self, train: Dataset, heldout: Dataset) -> dict[str, Any]:
        """What evaluation needs of the real data, computed once and cached beside the held-out encodings
        (it depends only on the two datasets, whose cache names hash their data and tokenizer settings):
        held-out surface points [M, POINTS, 3] and their Chamfer matrix [M, M], train shape descriptors
        [N, D] (labelled data), and the reference row."""
        path = heldout.cache.with_name(
            f"eval-{cache_key(train.cache.name, heldout.cache.name, POINTS, REFERENCE_VERSION)}.safetensors"
        )
        if path.is_file():
            with safe_open(path, "np") as f:
                row = json.loads(f.metadata()["row"])
                return {"row": row, **{name: f.get_tensor(name) for name in f.keys()}}
        heldout_points = [surface_points(heldout.mesh(i), seed=i) for i in range(len(heldout))]
        subset = matching_subset(train.labels.numpy(), heldout.labels.numpy(), seed=0)
        train_points = {int(i): surface_points(train.mesh(int(i)), seed=int(i)) for i in subset}
        with Progress(transient=True) as progress:
            task = progress.add_task("Chamfer distances (held-out)", total=len(heldout))
            heldout_distances = chamfer_matrix(heldout_points, progress=lambda: progress.advance(task))
            row = pointflow_scores(list(train_points.values()), heldout_points, progress, heldout_distances)
        row["samples"] = len(heldout)
        if not isinstance(self.tokenizer, PointTokenizer):
            row["watertight"] = _watertight_share(self.tokenizer, heldout.media)
        tensors = {"heldout_points": np.stack(heldout_points), "heldout_distances": heldout_distances}
        if next(iter(train.classes), None) is not None:
            all_train = [
                train_points[i] if i in train_points else surface_points(train.mesh(i), seed=i)
                for i in range(len(train))
            ]
            tensors["train_descriptors"] = _descriptors(all_train)
            judge = ClassifierJudge(tensors["train_descriptors"], train.labels.numpy())
            row["accuracy"] = judge.accuracy(_descriptors(heldout_points), heldout.labels.numpy())
        save_file(tensors, path, metadata={"row": json.dumps(row)})
        return {"row": row, **tensors}

    def _points(self, item: Tensor, seed: int) -> np.ndarray:
        """A generated item -> POINTS normalised surface points [POINTS, 3]."""
        if not isinstance(self.tokenizer, PointTokenizer):
            return surface_points(self.tokenizer.geometry(item), seed=seed)
        rng = np.random.default_rng(seed)
        xyz = item[:, :3].numpy()
        picks = rng.choice(len(xyz), size=POINTS, replace=len(xyz) < POINTS)
        return normalise_points(xyz[picks])


def _descriptors(point_sets: list[np.ndarray]) -> np.ndarray:
    return np.stack([shape_descriptor(p) for p in point_sets])


def _watertight_share(tokenizer, grids: Tensor) -> float:
    """Share of grids whose marching-cubes mesh is non-empty and watertight."""
    meshes = [tokenizer.geometry(g) for g in grids]
    return float(np.mean([len(m.faces) > 0 and m.is_watertight for m in meshes]))


def _draw(ax, geometry: trimesh.Trimesh | trimesh.PointCloud) -> None:
    """One shaded render (Lambert shading from a fixed light) of a mesh, or a scatter plot of a point set
    (anything without faces), in a 3D axis over the unit cube."""
    ax.set_axis_off()
    ax.view_init(**CAMERA)
    ax.set(xlim=(-0.5, 0.5), ylim=(-0.5, 0.5), zlim=(-0.5, 0.5))
    ax.set_box_aspect((1, 1, 1))
    faces = getattr(geometry, "faces", None)
    if faces is not None and len(faces):
        shade = 0.25 + 0.75 * np.clip(geometry.face_normals @ LIGHT, 0, 1)
        colours = np.array([0.35, 0.55, 0.85])[None] * shade[:, None]
        ax.add_collection3d(Poly3DCollection(geometry.triangles, facecolors=colours, linewidths=0))
    elif len(geometry.vertices):
        xyz = np.asarray(geometry.vertices)
        ax.scatter(*xyz.T, s=0.5, c=xyz[:, 2], cmap="viridis", depthshade=True)
