"""The resumable train loader: its state continues an epoch's batches mid-epoch and starts the next epoch
from an epoch's end; an item's own random draws depend on (seed, epoch, index) only."""

from __future__ import annotations

import random

import torch

from mmdit.recipe import load_recipe
from mmdit.training.build import build_adapters
from mmdit.training.data import MediaDataModule


def data_module(name: str) -> MediaDataModule:
    recipe = load_recipe(name, ["data.batch_size=256"])  # 1,438 training digits: 5 batches an epoch
    return MediaDataModule(recipe, build_adapters(recipe))


def epoch(loader, number: int) -> list[torch.Tensor]:
    loader.sampler.set_epoch(number)  # as Lightning does before each epoch
    return [batch["labels"]["digit"] for batch in loader]


def test_a_loaded_state_continues_the_epoch_from_the_next_batch():
    data = data_module("image-digits")
    loader = data.train_dataloader()
    first, second = epoch(loader, 0), epoch(loader, 1)
    assert len(loader) == len(first) == 5 and not torch.equal(first[0], second[0])
    loader.sampler.set_epoch(1)
    seen = iter(loader)
    for _ in range(2):
        next(seen)
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    resumed = data.train_dataloader()
    resumed.load_state_dict(state)
    rest = epoch(resumed, 1)
    assert len(rest) == 3 and all(torch.equal(a, b) for a, b in zip(rest, second[2:], strict=True))
    assert len(resumed) == 5 and resumed.state_dict() == {"epoch": 1, "batches": 5}
    assert all(torch.equal(a, b) for a, b in zip(epoch(resumed, 2), epoch(loader, 2), strict=True))


def test_a_state_saved_at_an_epochs_end_starts_the_next_epoch():
    data = data_module("image-digits")
    loader = data.train_dataloader()
    epoch(loader, 0)
    resumed = data.train_dataloader()
    resumed.load_state_dict(loader.state_dict())
    assert resumed.sampler.epoch == 1
    assert all(torch.equal(a, b) for a, b in zip(epoch(resumed, 1), epoch(loader, 1), strict=True))


def test_an_items_draws_depend_on_seed_epoch_and_index_only():
    items = data_module("unified-digits").train_dataloader().dataset
    random.seed(1)
    state = random.getstate()
    first = [items[(0, i)]["media"]["text"] for i in range(20)]
    assert random.getstate() == state  # the process's own generator is left as it was
    random.seed(2)
    again = [items[(0, i)]["media"]["text"] for i in range(20)]
    later = [items[(1, i)]["media"]["text"] for i in range(20)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, later, strict=True))  # phrasings vary by epoch
