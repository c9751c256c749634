"""SDF grids: signs and distances against analytic truth, grid -> mesh -> grid round trips, 3D patches."""

import numpy as np
import pytest
import torch
import trimesh

from modalities.mesh.datasets import SHAPE_CLASSES, make_shape
from modalities.mesh.sdf import (
    SdfTokenizer,
    cell_centres,
    grid_to_mesh,
    normalise,
    point_triangle_distance,
    sdf_grid,
    truncation_band,
    unsigned_distance,
    winding_number,
)

R, TRUNCATION = 24, 3.0
TAU = TRUNCATION / R


@pytest.fixture(scope="module")
def shapes():
    """One rotated primitive per class, normalised into the unit cube with a 0.1 margin."""
    rng = np.random.default_rng(7)
    return {kind: normalise(make_shape(kind, rng), 0.1)[0] for kind in SHAPE_CLASSES}


def test_normalise_records_how_to_map_back():
    mesh = trimesh.creation.box(extents=(4.0, 2.0, 1.0))
    mesh.apply_translation([10.0, -3.0, 5.0])
    out, centre, scale = normalise(mesh, 0.1)
    assert np.allclose(out.bounds, [[-0.4, -0.2, -0.1], [0.4, 0.2, 0.1]])
    assert np.allclose(out.vertices / scale + centre, mesh.vertices)


def test_sphere_and_box_grids_match_their_analytic_sdf():
    points = cell_centres(R).numpy()
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.35)
    analytic = (np.linalg.norm(points, axis=1) - 0.35) / TAU
    got = sdf_grid(sphere, R, TRUNCATION).reshape(-1).numpy()
    # The icosphere's flat faces sit up to ~2e-3 (0.016 τ) inside the true sphere at their centres.
    assert np.abs(got - np.clip(analytic, -1, 1)).max() < 0.02
    half = np.array([0.3, 0.2, 0.1])
    q = np.abs(points) - half
    box_sdf = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)
    got = sdf_grid(trimesh.creation.box(extents=2 * half), R, TRUNCATION).reshape(-1).numpy()
    assert np.abs(got - np.clip(box_sdf / TAU, -1, 1)).max() < 1e-4


def test_sign_is_right_inside_and_outside_every_primitive(shapes):
    """Ray parity (used for watertight meshes) against the generalised winding number, an independent
    inside test, at every cell centre of a 16³ grid for each rotated primitive."""
    points = cell_centres(16).float()
    for kind, mesh in shapes.items():
        assert mesh.is_watertight, kind
        grid = sdf_grid(mesh, 16, TRUNCATION).reshape(-1)
        inside = winding_number(points, torch.tensor(mesh.triangles, dtype=torch.float32)) > 0.5
        assert inside.any() and (~inside).any(), kind
        # A cell centre within 1e-3 τ of the surface (up to 5 of 4,096 here) is on it: either sign is right.
        off = grid.abs() > 1e-3
        assert off.float().mean() > 0.998
        assert torch.equal((grid < 0)[off], inside[off]), kind
        assert grid[0] == 1.0  # a corner of the cube is far outside every shape


def test_point_triangle_distance_cases():
    triangle = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    points = torch.tensor(
        [[0.2, 0.2, 0.5], [-1.0, -1.0, 0.0], [0.5, -2.0, 0.0], [1.0, 1.0, 0.0], [0.1, 0.1, 0.0]],
        dtype=torch.float64,
    )
    expected = torch.tensor([0.5, 2**0.5, 2.0, 0.5**0.5, 0.0], dtype=torch.float64)
    assert torch.allclose(point_triangle_distance(points, triangle), expected)


def test_candidate_search_matches_brute_force(shapes):
    """Within the truncated band (the only distances a grid keeps) on 1,500 random points per shape."""
    points = torch.rand(1500, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 0.5
    for kind, mesh in shapes.items():
        triangles = torch.tensor(mesh.triangles)
        brute = torch.cat(
            [point_triangle_distance(p[:, None], triangles[None]).amin(1) for p in points.split(500)]
        )
        fast = unsigned_distance(mesh, points)
        band = brute < TAU
        assert band.sum() > 100, kind
        assert (fast - brute)[band].abs().max() < 2e-3, kind
        assert (fast >= brute - 1e-9).all(), kind


def test_open_mesh_warns_and_keeps_the_sign_away_from_the_hole():
    box = trimesh.creation.box(extents=(0.6, 0.6, 0.6))
    top = np.flatnonzero(box.face_normals[:, 2] > 0.5)
    open_box = trimesh.Trimesh(box.vertices, np.delete(box.faces, top, axis=0))
    with pytest.warns(UserWarning, match="leaky.obj is not watertight"):
        grid = sdf_grid(open_box, R, TRUNCATION, name="leaky.obj")[0]
    closed = sdf_grid(box, R, TRUNCATION)[0]
    # Below the box's mid-plane the hole (at the top) barely moves the winding number.
    assert torch.equal(grid[:, :, : R // 2] < 0, closed[:, :, : R // 2] < 0)


def test_grid_mesh_grid_round_trip(shapes):
    """Marching cubes then re-encoding: the same sign at every cell farther than 0.05 τ from the surface
    (a cone's tip inside one cell can be cut off), values within 0.01 τ on average and 0.5 τ at worst
    (sharp box and cone edges come back rounded off within a cell)."""
    for kind, mesh in shapes.items():
        grid = sdf_grid(mesh, R, TRUNCATION)
        surface = grid_to_mesh(grid)
        assert surface.is_watertight and surface.volume > 0, kind
        assert abs(surface.volume - mesh.volume) < 0.05 * mesh.volume, kind
        again = sdf_grid(surface, R, TRUNCATION)
        clear = grid.abs() > 0.05
        assert torch.equal((again < 0)[clear], (grid < 0)[clear]), kind
        assert (again - grid).abs().mean() < 0.01, kind
        assert (again - grid).abs().max() < 0.5, kind


def test_grid_to_mesh_drops_specks_and_handles_empty_grids():
    sphere = sdf_grid(trimesh.creation.icosphere(radius=0.3), R, TRUNCATION)
    specked = sphere.clone()
    specked[0, 1, 1, 1] = -0.5  # one stray inside cell far from the sphere
    assert len(grid_to_mesh(specked).split(only_watertight=False)) == 1
    assert len(grid_to_mesh(specked, keep_fraction=0.0).split(only_watertight=False)) == 2
    assert len(grid_to_mesh(torch.ones(1, R, R, R)).faces) == 0


def test_sdf_tokenizer_round_trip_order_and_positions():
    tok = SdfTokenizer(resolution=8, patch_size=4, truncation=2.0)
    grids = torch.rand(3, 1, 8, 8, 8) * 2 - 1
    tokens = tok.encode(grids)
    assert tokens.x.shape == (3, 8, 64) and tokens.pos.shape == (3, 8, 3) and tokens.mask.all()
    assert torch.equal(tok.decode(tokens), grids)
    # Token 5 is block (x=1, y=0, z=1); its first value is cell (4, 0, 4).
    assert tokens.pos[0, 5].tolist() == [1, 0, 1] and tokens.x[0, 5, 0] == grids[0, 0, 4, 0, 4]
    assert tokens.x[0, 5, 1] == grids[0, 0, 4, 0, 5]  # z varies fastest inside a block
    layout = tok.layout(2)
    assert layout.x.shape == (2, 8, 64) and torch.equal(layout.pos[0], tokens.pos[0])
    spec = tok.stream("mesh")
    assert (spec.features, spec.positions, spec.axes) == (64, "rope", 3)
    with pytest.raises(ValueError, match=r"\(2, 1, 8, 8, 6\)"):
        tok.encode(torch.zeros(2, 1, 8, 8, 6))
    with pytest.raises(ValueError, match="divisible"):
        SdfTokenizer(resolution=10, patch_size=4, truncation=2.0)


def test_band_restricted_grid_equals_the_full_definition_and_the_band_holds_every_near_cell(shapes):
    """sdf_grid computes distances only inside `truncation_band`; it must equal the definition computed at
    every cell (the candidate search everywhere, then clipped), bit for bit, and the band must contain every
    cell whose exact distance (brute force over all faces, float64) is within τ."""
    for kind in ("box", "cone"):
        mesh = shapes[kind]
        points = cell_centres(R)
        inside = sdf_grid(mesh, R, TRUNCATION).reshape(-1) < 0
        distance = unsigned_distance(mesh, points) / (TRUNCATION / R)
        full = torch.where(inside, -distance, distance).clamp(-1, 1).float()
        assert torch.equal(sdf_grid(mesh, R, TRUNCATION).reshape(-1), full), kind
        triangles = torch.tensor(mesh.triangles)
        exact = torch.cat(
            [point_triangle_distance(p[:, None], triangles[None]).amin(1) for p in points.split(2048)]
        )
        band = truncation_band(mesh, R, TRUNCATION)
        near = exact < TRUNCATION / R
        assert near.sum() > 500 and band[near].all(), kind
        assert band.float().mean() < 2 * near.float().mean(), kind  # the bound is not vacuous
