"""The token cache: `mmdit prepare` writes each split's encoding, `data.cache=true` trains on it with the same
losses as encoding every batch, and changed settings are a miss that names the command to run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from mmdit.cli import main
from mmdit.recipe import load_recipe
from mmdit.training import token_cache
from mmdit.training.build import build_adapters, build_data
from mmdit.training.data import MediaDataModule
from mmdit.training.token_cache import MANIFEST, CacheMiss, prepare_tokens, read_tokens

TINY = [
    "model.width=32",
    "model.heads=2",
    "model.single_depth=1",
    "data.batch_size=32",
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "sample.steps=2",
    "sample.grid=10",
    "optimizer.warmup_steps=2",
]


@pytest.fixture(scope="module", autouse=True)
def cache_root(tmp_path_factory):
    """One cache for the module, so the audio encoding is made once."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMDIT_CACHE", str(root))
        yield root


@pytest.mark.parametrize(
    "name, overrides",
    [("image-digits", ["data.batch_size=100"]), ("audio-notes", ["data.batch_size=100"])],
)
def test_prepare_then_read_gives_the_encoding_exactly(name, overrides):
    recipe = load_recipe(name, overrides)
    folders = prepare_tokens(recipe, build_adapters(recipe))
    adapters = build_adapters(recipe)
    adapter = next(iter(adapters.values()))  # the one stream
    data = MediaDataModule(recipe, adapters)
    for split, media in (("train", data.train), ("heldout", data.heldout)):
        manifest = json.loads((folders[split] / MANIFEST).read_text())
        cached = read_tokens(recipe, adapter, media, split)
        assert manifest["items"] == len(cached) == len(media)
        assert cached.classes == media.classes
        # Batches of another size than prepare's (100): training batches mix items freely.
        for raw, stored in zip(
            DataLoader(media, batch_size=64), DataLoader(cached, batch_size=64), strict=True
        ):
            tokens = adapter.encode(raw["media"], raw.get("numbers", {}))
            assert torch.equal(stored["tokens"]["x"], tokens.x)
            assert torch.equal(stored["tokens"]["pos"], tokens.pos)
            assert torch.equal(stored["tokens"]["mask"], tokens.mask)
            assert stored["labels"].keys() == raw["labels"].keys()
            for key, labels in raw["labels"].items():
                assert torch.equal(stored["labels"][key], labels)
            assert stored.get("numbers", {}).keys() == raw.get("numbers", {}).keys()
            for key, numbers in raw.get("numbers", {}).items():
                assert stored["numbers"][key].dtype == numbers.dtype and torch.equal(
                    stored["numbers"][key], numbers
                )
    if name == "audio-notes":  # clips of the notes set last a full second: every token is real
        assert manifest["shapes"]["x"] == [16, 512] and bool(cached.columns["mask"].all())


def _prepare(recipe):
    return prepare_tokens(recipe, build_adapters(recipe))


def _data(recipe):
    return build_data(recipe, build_adapters(recipe))


def test_shards_split_at_the_size_limit(monkeypatch):
    recipe = load_recipe("image-digits", ["streams.image.options.patch_size=1", "data.batch_size=50"])
    # An item: x 64 x 1 and pos 64 x 2 float32, mask 64 bool, one int64 label = 840 bytes; 7 per shard.
    monkeypatch.setattr(token_cache, "SHARD_BYTES", 7 * 840)
    folder = prepare_tokens(recipe, build_adapters(recipe))["train"]
    manifest = json.loads((folder / MANIFEST).read_text())
    sizes = [shard["items"] for shard in manifest["shards"]]
    assert sizes == [7] * (len(sizes) - 1) + [manifest["items"] - 7 * (len(sizes) - 1)] and sizes[-1] <= 7
    assert sorted(p.name for p in folder.glob("shard-*")) == [s["file"] for s in manifest["shards"]]
    adapters = build_adapters(recipe)
    adapter = next(iter(adapters.values()))
    media = MediaDataModule(recipe, adapters).train
    cached = read_tokens(recipe, adapter, media, "train")
    everything = adapter.encode(torch.stack([media[i]["media"] for i in range(len(media))]))
    assert torch.equal(cached.columns["x"], everything.x)


def test_changed_settings_are_a_miss_naming_the_prepare_command(capsys):
    _prepare(load_recipe("audio-notes", ["data.batch_size=100"]))
    # The options' defaults are part of the key: spelling out the default n_mels still hits the cache.
    _data(load_recipe("audio-notes", ["data.cache=true", "streams.audio.options.n_mels=128"]))
    with pytest.raises(CacheMiss, match="tokens for other settings") as miss:
        _data(load_recipe("audio-notes", ["data.cache=true", "streams.audio.options.n_mels=64"]))
    assert "mmdit prepare audio-notes" in str(miss.value)
    with pytest.raises(CacheMiss, match="no train tokens are cached"):
        _data(load_recipe("image-digits", ["data.cache=true", "streams.image.options.patch_size=4"]))
    # Through the command line the message gives the exact command, overrides included.
    assert main(["fit", "audio-notes", "data.cache=true", "streams.audio.options.patch_size=2"]) == 2
    said = " ".join(capsys.readouterr().err.split())
    assert "run `mmdit prepare audio-notes data.cache=true streams.audio.options.patch_size=2` first" in said


def test_unified_recipes_are_refused():
    with pytest.raises(ValueError, match="unified"):
        _data(load_recipe("unified-digits", ["data.cache=true"]))


def _train_losses(run_dir: Path) -> list[float]:
    rows = list(csv.DictReader((run_dir / "logs" / "metrics.csv").open()))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


def test_fit_on_cached_tokens_trains_with_the_uncached_losses(tmp_path):
    assert main(["prepare", "image-digits", *TINY]) == 0
    assert main(["fit", "image-digits", *TINY, "data.cache=true", f"run_dir={tmp_path / 'cached'}"]) == 0
    assert main(["fit", "image-digits", *TINY, f"run_dir={tmp_path / 'media'}"]) == 0
    batch = next(iter(_data(load_recipe("image-digits", [*TINY, "data.cache=true"])).train_dataloader()))
    assert set(batch) == {"tokens", "labels"} and batch["tokens"]["x"].shape == (32, 16, 4)  # no media
    cached, media = _train_losses(tmp_path / "cached"), _train_losses(tmp_path / "media")
    assert len(cached) == 3 and all(math.isfinite(v) for v in cached)
    assert (tmp_path / "cached" / "weights.safetensors").is_file()
    # Same seed, same tokens in: the same losses (rel 1e-6 leaves room for float32 summation order).
    assert cached == pytest.approx(media, rel=1e-6)
