"""Weight files a user hands over: no command unpickles code, and every broken file is a one-line error
naming it (mmdit.weights_files, through the `mmdit` command)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mmdit.cli import main
from mmdit.recipe import load_recipe
from mmdit.training.build import build, load_module
from mmdit.training.export import export_weights
from mmdit.weights_files import read_checkpoint, read_safetensors, state_dict_mismatch

TINY = ["model.width=16", "model.heads=1", "model.joint_depth=0", "model.single_depth=1"]


class Payload:
    """Unpickling this object runs `open(marker, "w")`: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def lightning_like(recipe_name: str, folder: Path, *overrides: str) -> tuple[Path, Path, dict]:
    """An untrained module of `recipe_name` as an export (.safetensors) and as the parts of a Lightning
    checkpoint mmdit reads (.ckpt); returns both paths and the checkpoint dict."""
    _, module = build(load_recipe(recipe_name, [*TINY, *overrides]))
    weights = export_weights(module, folder / f"{recipe_name}.safetensors")
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": {"recipe": module.hparams["recipe"], "classes": module.hparams["classes"]},
        "global_step": 0,
    }
    torch.save(checkpoint, folder / f"{recipe_name}.ckpt")
    return weights, folder / f"{recipe_name}.ckpt", checkpoint


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, Path, dict]:
    return lightning_like("image-digits", tmp_path_factory.mktemp("digits"))


@pytest.fixture
def payload(digits, tmp_path) -> tuple[Path, Path]:
    """A real checkpoint of image-digits with a payload among its callbacks' state: (file, marker)."""
    marker = tmp_path / "payload-ran"
    torch.save({**digits[2], "callbacks": {"ModelCheckpoint": Payload(marker)}}, tmp_path / "payload.ckpt")
    return tmp_path / "payload.ckpt", marker


def test_the_payload_runs_when_unpickled(tmp_path):
    """The crafted object is live: the tests below would see its marker if a command unpickled it."""
    marker = tmp_path / "payload-ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["sample", "{ckpt}", "--n", "1", "--steps", "1", "--out", "{tmp}/samples"],
        ["eval", "{ckpt}", "--steps", "1"],
        ["export", "{ckpt}", "{tmp}/w.safetensors"],
        ["describe", "{ckpt}", "{tmp}/image.png"],
        ["convert", "dit", "{ckpt}", "{tmp}/dit.safetensors"],
        ["convert", "sd3", "{ckpt}", "{tmp}/sd3.safetensors"],
        ["fit", "image-digits", *TINY, "run_dir={tmp}/run", "--resume", "{ckpt}"],
        ["fit", "image-digits", *TINY, "streams.image.options.codec={ckpt}", "run_dir={tmp}/run"],
        ["prepare", "image-digits", "streams.image.options.codec={ckpt}"],
    ],
    ids=["sample", "eval", "export", "describe", "convert-dit", "convert-sd3", "resume", "codec", "prepare"],
)
def test_payload_checkpoint_runs_nothing_under_any_command(command, payload, tmp_path, capsys):
    path, marker = payload
    args = [a.format(ckpt=path, tmp=tmp_path) for a in command]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert not marker.exists()
    assert str(path) in error and error.strip().startswith("error: ") and error.strip().count("\n") == 0
    assert "will likely succeed" not in error  # torch's advice to unpickle it anyway
    assert "does not unpickle" in error or "not a readable .safetensors" in error
    assert not (tmp_path / "run").exists()


def test_no_file_of_the_project_unpickles_without_weights_only():
    root = Path(__file__).parents[1]
    folders = ("mmdit", "modalities", "tests", "docs", "examples", "benchmarks", "recipes")
    files = [p for f in folders for p in (root / f).rglob("*") if p.suffix in (".py", ".md", ".yaml")]
    assert len(files) > 100
    needle = "=".join(("weights_only", "False"))  # built, so that a grep of the repository finds nothing
    assert [p for p in files if needle in p.read_text()] == []


def broken_copies(good: Path, folder: Path) -> dict[str, Path]:
    """`good` truncated to half, emptied, and replaced by 400 random bytes, with its suffix."""
    data = good.read_bytes()
    contents = {"truncated": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(400)}
    paths = {}
    for kind, content in contents.items():
        paths[kind] = folder / f"{kind}{good.suffix}"
        paths[kind].write_bytes(content)
    return paths


@pytest.mark.parametrize("kind", ["truncated", "empty", "garbage"])
@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize(
    "command",
    [
        ["sample", "{file}", "--out", "{tmp}/samples"],
        ["eval", "{file}"],
        ["export", "{file}", "{tmp}/w.safetensors"],
        ["convert", "dit", "{file}", "{tmp}/dit.safetensors"],
        ["fit", "image-digits", *TINY, "run_dir={tmp}/run", "--resume", "{file}"],
    ],
    ids=["sample", "eval", "export", "convert", "resume"],
)
def test_broken_weight_file_is_an_error_naming_it(command, kind, suffix, digits, tmp_path, capsys):
    good = digits[0] if suffix == ".safetensors" else digits[1]
    broken = broken_copies(good, tmp_path)[kind]
    args = [a.format(file=broken, tmp=tmp_path) for a in command]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert str(broken) in error and error.strip().startswith("error: ") and error.strip().count("\n") == 0
    assert not (tmp_path / "run").exists()


def test_resume_from_an_export_says_resuming_needs_a_lightning_checkpoint(digits, tmp_path, capsys):
    args = ["fit", "image-digits", *TINY, f"run_dir={tmp_path / 'run'}", "--resume", str(digits[0])]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "resuming needs a Lightning .ckpt" in error and str(digits[0]) in error
    assert "mmdit sample / eval" in error and not (tmp_path / "run").exists()


def test_resume_from_another_recipes_checkpoint_names_the_differing_keys(digits, tmp_path, capsys):
    args = ["fit", "image-digits", *TINY, "model.width=32", "model.heads=2", f"run_dir={tmp_path / 'run'}"]
    assert main([*args, "--resume", str(digits[1])]) == 2
    error = capsys.readouterr().err
    assert "is a checkpoint of another recipe" in error and str(digits[1]) in error
    assert "model.heads (" in error and "model.width (" in error
    assert "model.blocks" not in error  # the differing recipe keys, not a dump of the state dict


def test_export_of_a_non_mmdit_checkpoint_names_what_it_lacks(tmp_path, capsys):
    torch.save({"weights": torch.ones(3)}, tmp_path / "foreign.ckpt")
    assert main(["export", str(tmp_path / "foreign.ckpt"), str(tmp_path / "w.safetensors")]) == 2
    assert "is not a Lightning checkpoint of `mmdit fit`" in capsys.readouterr().err


def test_weights_that_do_not_fit_their_recipe_name_a_few_keys(digits, tmp_path):
    tensors, metadata = read_safetensors(digits[0])
    tensors.pop(next(iter(tensors)))
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, tmp_path / "edited.safetensors", metadata=metadata)
    with pytest.raises(ValueError, match=r"1 missing \(e\.g\. .*\); 1 unexpected \(e\.g\. extra\.weight\)"):
        load_module(tmp_path / "edited.safetensors")


def test_state_dict_mismatch_counts_each_kind_and_names_a_few():
    expected = {f"w{i}": torch.zeros(2) for i in range(6)}
    given = {"w0": torch.zeros(3), "w1": torch.zeros(2), "other": torch.zeros(1)}
    assert state_dict_mismatch(expected, given) == (
        "4 missing (e.g. w2, w3, w4); 1 unexpected (e.g. other); 1 of another shape (e.g. w0 [3] vs [2])"
    )
    assert state_dict_mismatch(expected, dict(expected)) is None


def test_readers_round_trip_good_files(digits):
    tensors, metadata = read_safetensors(digits[0])
    assert "recipe" in metadata and all(isinstance(v, torch.Tensor) for v in tensors.values())
    stored = read_checkpoint(digits[1])
    for key, value in digits[2]["state_dict"].items():
        assert torch.equal(stored["state_dict"][key], value), key
