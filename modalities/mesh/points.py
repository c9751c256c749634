"""Meshes as unordered sets of surface points, Point-E's design: one token per point, no positions."""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from torch import Tensor

from mmdit.contract import StreamSpec, Tokens

COORDINATE_SCALE = 2.0  # unit-cube coordinates [-0.5, 0.5] -> token values [-1, 1]


class PointTokenizer:
    """Point sets [B, N, 3] (xyz in the unit cube) or [B, N, 6] (xyz + unit normals) <-> tokens
    x [B, N, 3|6] (xyz × 2, normals as they are), pos [B, N, 0], mask all True.

    The set is unordered: no token has a position, so the backbone (attention without positions) is
    equivariant to permuting the points and the model learns a distribution over sets."""

    def __init__(self, points: int, normals: bool) -> None:
        if points < 1:
            raise ValueError(f"points must be >= 1, got {points}")
        self.points, self.normals = points, normals
        self.features = 6 if normals else 3

    @property
    def settings(self) -> dict:
        return {"kind": "points", "points": self.points, "normals": self.normals}

    def stream(self, name: str) -> StreamSpec:
        return StreamSpec(name, features=self.features, positions="none")

    def from_mesh(self, mesh: trimesh.Trimesh, name: str) -> Tensor:
        """A mesh in the unit cube -> [N, 3|6]: N area-uniform surface samples (fixed seed), with the normal
        of the face each lies on when `normals`."""
        points, faces = trimesh.sample.sample_surface(mesh, self.points, seed=0)
        columns = [points, mesh.face_normals[faces]] if self.normals else [points]
        return torch.from_numpy(np.concatenate(columns, axis=1)).float()

    def encode(self, media: Tensor) -> Tokens:
        """[B, N, 3|6] -> Tokens(x [B, N, 3|6], pos [B, N, 0], mask [B, N] all True)."""
        if media.ndim != 3 or media.shape[-1] != self.features:
            raise ValueError(f"point sets must be [B, N, {self.features}], got {tuple(media.shape)}")
        x = torch.cat([media[..., :3] * COORDINATE_SCALE, media[..., 3:]], dim=-1)
        b, n = x.shape[:2]
        return Tokens(x, x.new_zeros(b, n, 0), torch.ones(b, n, dtype=torch.bool, device=x.device))

    def decode(self, tokens: Tokens) -> Tensor:
        """Tokens -> point sets [B, N, 3|6]; normals renormalised to unit length."""
        xyz = tokens.x[..., :3] / COORDINATE_SCALE
        if not self.normals:
            return xyz
        normals = torch.nn.functional.normalize(tokens.x[..., 3:], dim=-1)
        return torch.cat([xyz, normals], dim=-1)

    def layout(self, batch_size: int) -> Tokens:
        return self.encode(torch.zeros(batch_size, self.points, self.features))

    def geometry(self, item: Tensor) -> trimesh.PointCloud | trimesh.Trimesh:
        """[N, 3|6] -> a point cloud; with normals, a face-less Trimesh carrying them as vertex normals, as
        trimesh writes those into PLY files (`nx ny nz`) and reads the file back as a point cloud."""
        xyz = item[:, :3].detach().cpu().numpy()
        if not self.normals:
            return trimesh.PointCloud(xyz)
        normals = item[:, 3:].detach().cpu().numpy()
        return trimesh.Trimesh(xyz, np.zeros((0, 3), dtype=np.int64), vertex_normals=normals, process=False)
