"""The DataModule: ranks' batches interleave into one process's global batch, the split seed draws disjoint
splits, unified recipes pair captions with media, and a batch larger than the data is named."""

from types import SimpleNamespace

import pytest
import torch

from mmdit.recipe import load_recipe
from mmdit.training.build import build_adapters
from mmdit.training.data import MediaDataModule


def data_module(name: str, *overrides: str) -> MediaDataModule:
    recipe = load_recipe(name, list(overrides))
    return MediaDataModule(recipe, build_adapters(recipe))


def test_two_ranks_batches_interleave_into_the_one_process_global_batch():
    whole = next(iter(data_module("image-digits", "data.batch_size=16").train_dataloader()))
    for rank in (0, 1):
        half = data_module("image-digits", "data.batch_size=8")
        half.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        batch = next(iter(half.train_dataloader()))
        assert torch.equal(batch["media"], whole["media"][rank::2])
        assert torch.equal(batch["labels"]["digit"], whole["labels"]["digit"][rank::2])


def test_the_split_seed_draws_disjoint_train_and_heldout_splits():
    splits = {}
    for seed in (0, 1):
        data = data_module("image-digits", f"data.split_seed={seed}")
        train, heldout = set(data.train.index.tolist()), set(data.heldout.index.tolist())
        assert not train & heldout and len(train) + len(heldout) == 1797
        splits[seed] = heldout
    assert splits[0] != splits[1]
    assert set(data_module("image-digits", "seed=5").heldout.index.tolist()) == splits[0]  # not the run seed


def test_a_unified_recipe_pairs_each_item_with_a_caption_of_its_labels():
    data = data_module("unified-digits")
    item = data.train[0]
    assert set(item["media"]) == {"image", "text"} and item["media"]["image"].shape == (1, 8, 8)
    assert item["media"]["text"].dtype == torch.long and item["media"]["text"].ndim == 1
    assert data.classes == {"digit": [str(d) for d in range(10)]}


def test_a_batch_larger_than_the_train_split_is_named():
    with pytest.raises(
        ValueError, match=r"data.batch_size 5000 is larger than the train split \(1438 items\)"
    ):
        data_module("image-digits", "data.batch_size=5000")
