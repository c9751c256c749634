"""Mesh datasets: the bundled `shapes` (six primitives made by `trimesh.creation`, no download) and a folder
of a user's own mesh files. Encoding a mesh (an SDF grid, surface samples) is costly, so both encode every
item once and cache the result as a safetensors file, keyed by a hash of the encoder's settings and of the
data (the generator's version and seed, or the file list with sizes and modification times).

Both yield `{"media": Tensor (what the encoder made), "labels": {name: int}}`, carry `classes`, and give
`mesh(i)`, item i's mesh normalised into the unit cube (for evaluation).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import trimesh
from rich.progress import Progress
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import Dataset

from mmdit.cache import cache_dir, cache_key
from modalities.common.folders import labelled_files
from modalities.common.splits import SPLITS, split_indices
from modalities.mesh.sdf import normalise

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
SHAPE_CLASSES = ("box", "sphere", "cylinder", "cone", "torus", "capsule")
SHAPES_VERSION = 3  # bump when the generator changes, so old caches are not reused
SHAPES_PER_CLASS = {"train": 100, "heldout": 16}
SHAPES_SEED = {"train": 0, "heldout": 1}
READER_VERSION = 2  # bump when `read_mesh` changes what a file becomes (2: vertices merged)
MAX_TILT = np.radians(15)  # the random tilt away from upright, at most

Encoder = Callable[[trimesh.Trimesh, str], Tensor]
"""(mesh normalised into the unit cube, its name for messages) -> the item's media tensor."""


def read_mesh(path: str | Path) -> trimesh.Trimesh:
    """A mesh file (OBJ, PLY, STL, OFF, GLB/glTF) -> one Trimesh; a scene's geometries are merged (with
    their transforms). Errors name the file: unreadable, empty, a point cloud, or non-finite vertices."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mesh file {path} does not exist")
    try:
        loaded = trimesh.load(path, process=False)
    except Exception as err:  # trimesh raises many types (parsers, numpy, json); the user needs the file
        raise ValueError(f"cannot read mesh {path}: {err}") from err
    if isinstance(loaded, trimesh.Scene):
        loaded = loaded.to_mesh() if loaded.geometry else trimesh.Trimesh()
    if isinstance(loaded, trimesh.PointCloud):
        raise ValueError(f"{path} holds a point cloud, not a mesh (it has no faces)")
    if not isinstance(loaded, trimesh.Trimesh):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a triangle mesh")
    if len(loaded.faces) == 0:
        raise ValueError(f"{path} holds an empty mesh (no faces)")
    if not np.isfinite(loaded.vertices).all():
        raise ValueError(f"{path} has NaN or infinite vertex coordinates")
    return merged(loaded)


def merged(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """`mesh` with coincident vertices merged, as one surface rather than a triangle soup (STL stores each
    triangle's own corners; unmerged, a closed STL is "not watertight"). Coincident means within 1e-9 of
    the mesh's extent, so that a tiny or a huge model merges alike; UVs and normals do not keep corners
    apart, since only the surface is encoded."""
    extent = float(mesh.scale)
    if extent > 0 and math.isfinite(extent):
        digits = math.ceil(-math.log10(extent * 1e-9))
        mesh.merge_vertices(merge_tex=True, merge_norm=True, digits_vertex=digits)
    return mesh


def make_shape(kind: str, rng: np.random.Generator) -> trimesh.Trimesh:
    """One primitive of class `kind` with random proportions and a random rotation (low-poly: the SDF grid,
    not the tessellation, limits the detail): any turn about the vertical (z) axis, then a tilt of at most
    MAX_TILT about a random horizontal axis, as objects stand in a scene. (Uniform 3D rotations left a
    2,000-step CPU model making rough blobs of everything but spheres.)"""
    if kind == "box":
        mesh = trimesh.creation.box(extents=rng.uniform(0.3, 1.0, 3))
    elif kind == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=2)
    elif kind == "cylinder":
        mesh = trimesh.creation.cylinder(rng.uniform(0.2, 0.6), rng.uniform(0.5, 1.5), sections=24)
    elif kind == "cone":
        mesh = trimesh.creation.cone(rng.uniform(0.3, 0.7), rng.uniform(0.5, 1.5), sections=24)
    elif kind == "torus":
        mesh = trimesh.creation.torus(1.0, rng.uniform(0.3, 0.5), major_sections=24, minor_sections=12)
    elif kind == "capsule":
        mesh = trimesh.creation.capsule(rng.uniform(0.3, 1.2), rng.uniform(0.2, 0.5), count=[12, 12])
    else:
        raise KeyError(f"unknown shape {kind!r}; classes: {SHAPE_CLASSES}")
    turn, direction, tilt = rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi), rng.uniform(0, MAX_TILT)
    rotate = trimesh.transformations.rotation_matrix
    horizontal = [np.cos(direction), np.sin(direction), 0.0]
    mesh.apply_transform(rotate(tilt, horizontal) @ rotate(turn, [0, 0, 1]))
    return mesh


class CachedMeshes(Dataset):
    """Encoded meshes held in memory, with labels, read from or written to one safetensors cache file.

    media [N, ...] (whatever the encoder makes), labels [N] (-1: unlabelled), centre [N, 3] and scale [N]
    (the unit-cube normalisation: original = normalised / scale + centre), index [N] (the item's number
    among the source's items, as skipped ones leave gaps)."""

    classes: dict[str, list[str]]
    margin: float
    cache: Path  # the safetensors file the encodings live in
    _labels: list[int]  # per source item, set by the subclass before `_fill`

    def _fill(
        self,
        cache: Path,
        count: int,
        mesh_at: Callable[[int], trimesh.Trimesh],
        encode: Encoder,
        names,
        split: str,
    ) -> None:
        """Load `cache`, or encode items 0..count-1 (`mesh_at(i)`; a ValueError skips the item) and write
        it. Skipped items are counted in a warning, each time the dataset is built (the cache keeps them)."""
        if cache.is_file():
            stored = load_file(cache)
            with safe_open(cache, "pt") as f:
                skipped = json.loads((f.metadata() or {}).get("skipped", "[]"))
        else:
            stored, skipped = self._encode(count, mesh_at, encode, names, f"encoding {cache.stem}")
            cache.parent.mkdir(parents=True, exist_ok=True)
            save_file(stored, cache, metadata={"skipped": json.dumps(skipped)})
        if skipped:
            detail = "; ".join(skipped[:5])
            warnings.warn(f"skipped {len(skipped)} of {count} {split} meshes: {detail}", stacklevel=3)
        self.cache = cache
        self.media, self.labels = stored["media"], stored["labels"]
        self.centre, self.scale, self.index = stored["centre"], stored["scale"], stored["index"]

    def _encode(self, count, mesh_at, encode: Encoder, names, description: str):
        """-> ({media, labels, centre, scale, index}, [why each skipped item was skipped])."""
        media, index, centres, scales, skipped = [], [], [], [], []
        with Progress(transient=True) as progress:
            for i in progress.track(range(count), description=description):
                try:
                    mesh, centre, scale = normalise(mesh_at(i), self.margin)
                    media.append(encode(mesh, names(i)))
                except ValueError as err:
                    skipped.append(str(err) if names(i) in str(err) else f"{names(i)}: {err}")
                    continue
                index.append(i)
                centres.append(torch.from_numpy(centre))
                scales.append(scale)
        if not media:
            raise ValueError(f"no usable meshes ({count} tried): " + "; ".join(skipped[:5]))
        stored = {
            "media": torch.stack(media).contiguous(),
            "labels": torch.tensor([self._labels[i] for i in index]),
            "centre": torch.stack(centres).float(),
            "scale": torch.tensor(scales).float(),
            "index": torch.tensor(index),
        }
        return stored, skipped

    def __len__(self) -> int:
        return len(self.media)

    def __getitem__(self, i: int) -> dict:
        label = int(self.labels[i])
        key = next(iter(self.classes), None)
        return {"media": self.media[i], "labels": {} if key is None else {key: label}}


class ShapesDataset(CachedMeshes):
    """The bundled primitives: SHAPES_PER_CLASS[split] of each class in SHAPE_CLASSES, labels {"shape"},
    made from a fixed seed per split (train and held-out draw different shapes). Cached under
    `cache_dir()`."""

    classes = {"shape": list(SHAPE_CLASSES)}

    def __init__(self, split: str, encode: Encoder, settings: dict, margin: float) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.split, self.margin = split, margin
        per_class = SHAPES_PER_CLASS[split]
        self.kinds = [kind for kind in SHAPE_CLASSES for _ in range(per_class)]
        self._labels = [SHAPE_CLASSES.index(kind) for kind in self.kinds]
        key = cache_key(settings, margin, SHAPES_VERSION, SHAPES_SEED[split], per_class)
        cache = cache_dir() / f"shapes-{split}-{key}.safetensors"
        self._fill(cache, len(self.kinds), self._raw, encode, lambda i: f"shapes/{split}/{i}", split)

    def _raw(self, i: int) -> trimesh.Trimesh:
        # One generator per item, so item i does not depend on the items before it.
        rng = np.random.default_rng([SHAPES_SEED[self.split], SHAPES_VERSION, i])
        return make_shape(self.kinds[i], rng)

    def mesh(self, i: int) -> trimesh.Trimesh:
        """Item i's mesh, normalised into the unit cube as it was encoded."""
        return normalise(self._raw(int(self.index[i])), self.margin)[0]


class MeshFolder(CachedMeshes):
    """Mesh files under `root` (recursively). Labels: with every file inside a first-level sub-folder, the
    sub-folder's name is the class of `label` (`classes = {label: sorted names}`); with every file
    directly in `root` there are none. Files trimesh cannot read, empty meshes, point clouds and meshes
    with NaN vertices are skipped with a warning that counts them and names the first five. The encodings are
    cached in `root/.mmdit-cache/`."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        encode: Encoder,
        settings: dict,
        margin: float,
        heldout_fraction: float = 0.1,
        seed: int = 0,
        label: str = "class",
    ) -> None:
        self.root, self.margin = Path(root), margin
        files, labels, self.classes = labelled_files(self.root, MESH_SUFFIXES, "mesh", label)
        chosen = split_indices(len(files), split, heldout_fraction, seed)
        self.files = [files[i] for i in chosen]
        self._labels = [-1 if labels[i] is None else labels[i] for i in chosen]  # -1: unlabelled
        stamps = [
            (p.relative_to(self.root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files
        ]
        cache = (
            self.root
            / ".mmdit-cache"
            / f"{split}-{cache_key(settings, margin, READER_VERSION, stamps)}.safetensors"
        )
        self._fill(
            cache,
            len(self.files),
            lambda i: read_mesh(self.files[i]),
            encode,
            lambda i: str(self.files[i]),
            split,
        )

    def mesh(self, i: int) -> trimesh.Trimesh:
        """Item i's mesh, normalised into the unit cube as it was encoded."""
        return normalise(read_mesh(self.files[int(self.index[i])]), self.margin)[0]
