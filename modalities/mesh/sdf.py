"""Meshes <-> truncated signed-distance grids.

Conventions (every grid in mmdit follows them):
- A mesh is first normalised into the unit cube [-0.5, 0.5]³: its bounding box is centred at the origin and
  scaled so that its longest side is 1 - 2·margin, so a margin of empty cells surrounds every shape and
  marching cubes closes its surfaces.
- Grid cell (i, j, k) of a resolution-R grid samples the point (-0.5 + (i + ½)/R, ...) (x, y, z in that
  axis order). Distances are in units of the cube's side.
- Values are the signed distance divided by the truncation τ = `truncation` cells = truncation / R and
  clipped to [-1, 1]: negative inside, positive outside, ±1 beyond τ from the surface.
- The sign of a watertight mesh comes from ray parity along the grid lines (three axes voting); a mesh
  that is not watertight gets the generalised winding number (Jacobson et al. 2013, > ½ is inside), which
  degrades gracefully around holes, and a warning naming it. No sign is ever guessed silently.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes
from torch import Tensor

from mmdit.contract import StreamSpec, Tokens
from modalities.common.patches import grid_positions, patchify, unpatchify

CHUNK = 1 << 16  # point-triangle pairs per batched winding-number evaluation (small enough for the cache)
SURFACE_SAMPLES = 20_000
CANDIDATES = 8
RAY_OFFSET = 1e-4
BAND_EDGE = 1.0  # cells: the longest edge of the subdivided copy whose triangle balls bound the distance
BAND_BLOCK = 4  # cells per axis of the blocks ruled out (or in) before single cells


def normalise(mesh: trimesh.Trimesh, margin: float) -> tuple[trimesh.Trimesh, np.ndarray, float]:
    """A copy of `mesh` centred and scaled into the unit cube with `margin` to spare on each side.

    Returns (mesh, centre [3], scale): original vertex v maps to (v - centre) * scale, so a user maps a
    generated mesh back with v / scale + centre."""
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    lo, hi = mesh.bounds
    centre = (lo + hi) / 2
    extent = float((hi - lo).max())
    if extent <= 0:
        raise ValueError("the mesh has no extent (all vertices coincide)")
    scale = (1 - 2 * margin) / extent
    out = mesh.copy()
    out.apply_translation(-centre)
    out.apply_scale(scale)
    return out, centre, scale


def cell_centres(resolution: int) -> Tensor:
    """Points sampled by a resolution-R grid: float64 [R³, 3] in (x, y, z), x varying slowest."""
    axis = (torch.arange(resolution, dtype=torch.float64) + 0.5) / resolution - 0.5
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def _chunks(points: Tensor, faces: int):
    step = max(1, CHUNK // max(faces, 1))
    for begin in range(0, len(points), step):
        yield points[begin : begin + step]


def _segment_distance(p: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Distance from points p [..., 3] to segments a-b [..., 3] (broadcast) -> [...]."""
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-30)).clamp(0, 1)
    return (p - (a + t[..., None] * ab)).norm(dim=-1)


def point_triangle_distance(p: Tensor, triangles: Tensor) -> Tensor:
    """Exact distance from points p [..., 3] to triangles [..., 3, 3] (broadcast) -> [...].

    The closest point of a triangle is its plane's foot when that lies inside the triangle, else the closest
    point of one of its edges."""
    a, b, c = triangles.unbind(-2)
    normal = torch.linalg.cross(b - a, c - a)
    unit = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    height = ((p - a) * unit).sum(-1)
    foot = p - height[..., None] * unit
    edges = [(a, b), (b, c), (c, a)]
    # The foot is inside when it lies on the inner side of all three edges (edge normals point inward).
    inside = torch.stack([((foot - u) * torch.linalg.cross(normal, v - u)).sum(-1) >= 0 for u, v in edges])
    edge = torch.stack([_segment_distance(p, u, v) for u, v in edges]).amin(0)
    return torch.where(inside.all(0), height.abs(), edge)


def unsigned_distance(mesh: trimesh.Trimesh, points: Tensor) -> Tensor:
    """Distance from points [P, 3] to the surface of `mesh` -> [P], exact up to the candidate search.

    Candidates: the triangles under the `CANDIDATES` nearest of `SURFACE_SAMPLES` fixed-seed surface
    samples (a k-d tree query); the exact point-triangle distance is taken over them. Brute force over all
    faces took ~1 s for a 24³ grid around a 320-face sphere at one thread, this ~0.1 s; within the
    truncation band they agree to 2e-3 of the cube's side (tests/modalities/mesh/test_mesh_sdf.py), and the
    result is never below the true distance."""
    samples, face_index = trimesh.sample.sample_surface(mesh, SURFACE_SAMPLES, seed=0)
    _, nearest = cKDTree(samples).query(points.numpy(), k=CANDIDATES)
    triangles = torch.from_numpy(np.asarray(mesh.triangles, dtype=np.float64)[face_index[nearest]])
    return point_triangle_distance(points[:, None], triangles).amin(1)


def truncation_band(mesh: trimesh.Trimesh, resolution: int, truncation: float) -> Tensor:
    """Cells that may lie within τ = truncation / R of the surface -> bool [R³] (cell_centres' order); every
    other cell is certainly farther, so its truncated value is ±1 and needs no distance.

    A rigorous lower bound: the surface is split (exactly, flat triangles into flat triangles) until no
    edge is longer than `BAND_EDGE` cells; triangle T lies inside the ball around its centroid c_T of
    radius r_T, so dist(p, T) >= |p - c_T| - max r_T, and the nearest centroid (a k-d tree query) bounds
    the distance from below. Blocks of `BAND_BLOCK`³ cells are ruled out first by the same bound at their
    centres, widened by their half-diagonal (distance is 1-Lipschitz), then the cells of the others."""
    vertices, faces = trimesh.remesh.subdivide_to_size(mesh.vertices, mesh.faces, BAND_EDGE / resolution)
    triangles = vertices[faces]
    centroids = triangles.mean(1)
    radius = float(np.linalg.norm(triangles - centroids[:, None], axis=-1).max())
    tree = cKDTree(centroids)
    reach = truncation / resolution + radius
    block = BAND_BLOCK if resolution % BAND_BLOCK == 0 else 1
    coarse = resolution // block
    # Block b covers cells b·block ... b·block + block - 1 along each axis; its centre is cell_centres'
    # point of a coarse grid, and every cell of it is within half a diagonal of that centre.
    widened = reach + math.sqrt(3) * (block - 1) / (2 * resolution)
    near, _ = tree.query(cell_centres(coarse).numpy(), distance_upper_bound=widened * (1 + 1e-9))
    blocks = torch.from_numpy(near <= widened * (1 + 1e-9)).reshape(coarse, 1, coarse, 1, coarse, 1)
    candidate = blocks.expand(-1, block, -1, block, -1, block).reshape(-1)
    points = cell_centres(resolution)[candidate].numpy()
    near, _ = tree.query(points, distance_upper_bound=reach * (1 + 1e-9))
    band = torch.zeros(resolution**3, dtype=torch.bool)
    band[candidate.nonzero()[:, 0]] = torch.from_numpy(near <= reach * (1 + 1e-9))
    return band


def inside_by_ray_parity(mesh: trimesh.Trimesh, resolution: int) -> Tensor:
    """Inside test for a watertight mesh at the grid's cell centres -> bool [R, R, R].

    Along every grid line, parallel to each of the three axes in turn, a cell is inside when an odd number
    of the surface's crossings of that line lie before it. Lines are shifted off the grid by a tiny,
    irrational-ratio offset (`RAY_OFFSET` cells), because marching-cubes meshes put their vertices exactly
    on grid lines, where a crossing would count once per touching triangle; the shift moves a cell's answer
    only where the surface passes within that offset of it, i.e. where the SDF value is ~0 anyway. A line
    that still grazes an edge can miscount, so the three axes vote and the majority wins."""
    triangles = torch.tensor(mesh.triangles, dtype=torch.float64)
    axis = (torch.arange(resolution, dtype=torch.float64) + 0.5) / resolution - 0.5
    votes = torch.zeros(resolution, resolution, resolution, dtype=torch.int64)
    for along in range(3):
        u, v = [d for d in range(3) if d != along]
        # Barycentric coordinates of every line (u, v) in every triangle's projection onto the u-v plane.
        a, b, c = (triangles[:, i] for i in range(3))
        pu, pv = torch.meshgrid(axis, axis, indexing="ij")
        shift = RAY_OFFSET / resolution
        pu, pv = pu.reshape(-1, 1) + shift * math.sqrt(2), pv.reshape(-1, 1) + shift * math.sqrt(3)
        det = (b[:, u] - a[:, u]) * (c[:, v] - a[:, v]) - (c[:, u] - a[:, u]) * (b[:, v] - a[:, v])
        safe = torch.where(det == 0, 1.0, det)
        l1 = ((pu - a[:, u]) * (c[:, v] - a[:, v]) - (c[:, u] - a[:, u]) * (pv - a[:, v])) / safe
        l2 = ((b[:, u] - a[:, u]) * (pv - a[:, v]) - (pu - a[:, u]) * (b[:, v] - a[:, v])) / safe
        hit = (det != 0) & (l1 >= 0) & (l2 >= 0) & (l1 + l2 <= 1)  # [R², F]
        depth = a[:, along] + l1 * (b[:, along] - a[:, along]) + l2 * (c[:, along] - a[:, along])
        # Crossings before each cell along the line: misses go to +inf, then count by binary search.
        crossings = torch.where(hit, depth, math.inf).sort(dim=1).values  # [R², F]
        before = torch.searchsorted(crossings, axis.expand(len(crossings), -1).contiguous())  # [R², R]
        inside = (before % 2 == 1).reshape(resolution, resolution, resolution)  # (u, v, along)
        order = [0, 0, 0]
        order[u], order[v], order[along] = 0, 1, 2
        votes += inside.permute(*order).long()
    return votes >= 2


def winding_number(points: Tensor, triangles: Tensor) -> Tensor:
    """Generalised winding number of the triangles [F, 3, 3] at each point [P, 3] -> [P]: the sum of the
    signed solid angles the triangles subtend (van Oosterom–Strackee) over 4π; 1 inside a closed,
    outward-facing surface, 0 outside, fractional near holes."""
    out = []
    for chunk in _chunks(points, len(triangles)):
        a, b, c = (triangles[None, :, i] - chunk[:, None] for i in range(3))
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.linalg.cross(b, c)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append(2 * torch.atan2(det, den).sum(1) / (4 * math.pi))
    return torch.cat(out)


def sdf_grid(mesh: trimesh.Trimesh, resolution: int, truncation: float, name: str = "mesh") -> Tensor:
    """A mesh already in the unit cube -> truncated SDF grid float32 [1, R, R, R] in [-1, 1] (module
    docstring). Watertight meshes get their sign from ray parity; others from the generalised winding
    number, with a warning naming `name`, as its answer is only approximate around holes."""
    points = cell_centres(resolution)
    if mesh.is_watertight:
        inside = inside_by_ray_parity(mesh, resolution).reshape(-1)
    else:
        warnings.warn(
            f"{name} is not watertight; inside/outside comes from the generalised winding number, which is "
            "only approximate around holes",
            stacklevel=2,
        )
        triangles = torch.from_numpy(np.asarray(mesh.triangles, dtype=np.float32))
        inside = winding_number(points.float(), triangles) > 0.5
    # Cells beyond the band clip to ±1 whatever their distance; only the band's distances are computed.
    band = truncation_band(mesh, resolution, truncation)
    distance = torch.ones(len(points), dtype=torch.float64)
    distance[band] = unsigned_distance(mesh, points[band]) / (truncation / resolution)
    values = torch.where(inside, -distance, distance).clamp(-1, 1)
    return values.float().reshape(1, resolution, resolution, resolution)


def grid_to_mesh(grid: Tensor, keep_fraction: float = 0.05) -> trimesh.Trimesh:
    """SDF grid [1, R, R, R] (or [R, R, R]) -> the level-0 surface as a Trimesh in the unit cube.

    The grid is padded with +1 (outside) so every surface closes; connected pieces with fewer than
    `keep_fraction` of the largest piece's faces (floating specks a sampler leaves behind) are dropped.
    A grid without a sign change gives an empty mesh."""
    values = grid.detach().float().cpu().reshape(grid.shape[-3:]).numpy()
    resolution = values.shape[0]
    padded = np.pad(values, 1, constant_values=1.0)
    if padded.min() >= 0 or padded.max() <= 0:
        return trimesh.Trimesh()
    # skimage's default winding makes normals face outward for a negative-inside field (checked by
    # the sign of the volume in tests/modalities/mesh/test_mesh_sdf.py).
    verts, faces, _, _ = marching_cubes(padded, level=0.0)
    verts = (verts - 0.5) / resolution - 0.5
    mesh = trimesh.Trimesh(verts, faces, process=True)
    pieces = mesh.split(only_watertight=False)
    if len(pieces) > 1:
        largest = max(len(p.faces) for p in pieces)
        mesh = trimesh.util.concatenate([p for p in pieces if len(p.faces) >= keep_fraction * largest])
    return mesh


def check_grids(media: Tensor, resolution: int) -> None:
    """Refuse anything but a batch of SDF grids [B, 1, R, R, R] at `resolution`, naming the shape given."""
    r = resolution
    if media.ndim != 5 or tuple(media.shape[1:]) != (1, r, r, r):
        raise ValueError(f"sdf grids must be [B, 1, {r}, {r}, {r}], got {tuple(media.shape)}")


class SdfTokenizer:
    """SDF grids [B, 1, R, R, R] in [-1, 1] <-> tokens x [B, (R/p)³, p³] (one p×p×p block of cells per
    token, ViT-style 3D patches) with the block's (x, y, z) index as its RoPE position. The round trip is
    exact; the grid itself is the fixed codec (module docstring)."""

    def __init__(self, resolution: int, patch_size: int, truncation: float) -> None:
        if resolution % patch_size:
            raise ValueError(f"sdf resolution {resolution} must be divisible by patch_size {patch_size}")
        if truncation <= 0:
            raise ValueError(f"sdf truncation must be > 0 cells, got {truncation}")
        self.resolution, self.patch_size, self.truncation = resolution, patch_size, truncation
        self.cells = resolution // patch_size

    @property
    def settings(self) -> dict:
        return {"kind": "sdf", "resolution": self.resolution, "truncation": self.truncation}

    def stream(self, name: str) -> StreamSpec:
        return StreamSpec(name, features=self.patch_size**3, positions="rope", axes=3)

    def from_mesh(self, mesh: trimesh.Trimesh, name: str) -> Tensor:
        """A mesh in the unit cube -> grid [1, R, R, R]."""
        return sdf_grid(mesh, self.resolution, self.truncation, name)

    def encode(self, media: Tensor) -> Tokens:
        """grids [B, 1, R, R, R] -> Tokens(x [B, (R/p)³, p³], pos [B, (R/p)³, 3], mask all True)."""
        check_grids(media, self.resolution)
        x, pos = patchify(media, (self.patch_size,) * 3)
        return Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))

    def decode(self, tokens: Tokens) -> Tensor:
        """Tokens in `encode`'s order -> grids [B, 1, R, R, R], clamped to [-1, 1] (samplers overshoot)."""
        return unpatchify(tokens.x, tokens.pos, (self.patch_size,) * 3, channels=1).clamp(-1, 1)

    def layout(self, batch_size: int) -> Tokens:
        pos = grid_positions((self.cells,) * 3, batch_size)
        x = torch.zeros(batch_size, pos.shape[1], self.patch_size**3)
        return Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool))

    def geometry(self, item: Tensor) -> trimesh.Trimesh:
        """grid [1, R, R, R] -> its cleaned marching-cubes surface."""
        return grid_to_mesh(item)
