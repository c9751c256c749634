"""`mmdit prepare`, `mmdit fit mesh-shapes` and `mmdit sample` through the command line, on a tiny folder of
the bundled primitives (the bundled set itself takes minutes to encode)."""

import json

import numpy as np
import pytest
import trimesh

from mmdit.cli import main
from modalities.mesh.datasets import SHAPE_CLASSES, make_shape, read_mesh

TINY = [
    "model.width=32",
    "model.heads=2",
    "model.single_depth=1",
    "data.batch_size=8",
    "trainer.max_steps=12",
    "trainer.val_check_interval=6",
    "trainer.log_every_n_steps=4",
    "trainer.enable_progress_bar=false",
    "sample.steps=2",
    "sample.grid=4",
    "optimizer.warmup_steps=4",
    "streams.mesh.options.resolution=16",
    "streams.mesh.options.patch_size=4",
    "conditioning.labels=[class]",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("meshes")
    rng = np.random.default_rng(0)
    for kind in SHAPE_CLASSES[:3]:
        (root / kind).mkdir()
        for i in range(4):
            make_shape(kind, rng).export(root / kind / f"{i}.obj")
    return root


def test_prepare_fills_the_folder_cache(folder, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MMDIT_CACHE", str(tmp_path))  # prepare also writes the token cache there
    assert main(["prepare", "mesh-shapes", f"data.source.folder={folder}", *TINY]) == 0
    assert "11 train and 1 held-out" in capsys.readouterr().err
    assert len(list((folder / ".mmdit-cache").glob("*.safetensors"))) == 2


def test_fit_then_sample_writes_meshes_trimesh_loads(folder, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["fit", "mesh-shapes", *TINY, f"data.source.folder={folder}", f"run_dir={run_dir}"]) == 0
    report = json.loads((run_dir / "eval.json").read_text())
    assert {"mmd_cd", "cov_cd", "one_nna_cd", "watertight", "accuracy"} <= set(report["generated"])
    assert report["reference"]["watertight"] == 1.0
    assert (run_dir / "samples.png").is_file()
    out = tmp_path / "samples"
    args = ["sample", str(run_dir / "weights.safetensors"), "--n", "2", "--label", "sphere", "--steps", "2"]
    assert main([*args, "--out", str(out)]) == 0
    for i in range(2):
        for suffix in (".obj", ".glb"):
            loaded = trimesh.load(out / f"mesh_class-sphere_{i:03d}{suffix}")
            assert isinstance(loaded, trimesh.Trimesh | trimesh.Scene), suffix
    objs = sorted(out.glob("*.obj"))
    assert len(objs) == 2 and (out / "mesh_class-sphere_grid.png").is_file()
    # An untrained model may draw nothing; whatever it drew must load as a mesh inside the unit cube.
    for path in objs:
        if path.stat().st_size > 0 and "\nf " in path.read_text():
            assert np.abs(read_mesh(path).vertices).max() <= 0.5 + 1e-6
