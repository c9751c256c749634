"""Packed rows compute what a padded batch computes: same predictions on real tokens, same loss."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from mmdit.contract import StreamSpec
from mmdit.model.backbone import MMDiT
from mmdit.model.packing import pack, padding_share, unpack
from mmdit.model.tokens import Tokens
from mmdit.objectives.flow import masked_mse
from mmdit.recipe import load_recipe
from mmdit.training.build import build_adapters
from mmdit.training.module import DiffusionModule
from modalities.common.grids import grid_positions

SIZES = [(4, 4), (2, 3), (3, 3), (1, 2), (2, 2), (4, 2)]


def _padded_batch() -> Tokens:
    """Images of several sizes (in patches) as one padded batch, real tokens first."""
    generator = torch.Generator().manual_seed(0)
    longest = max(h * w for h, w in SIZES)
    x, pos = torch.zeros(len(SIZES), longest, 4), torch.zeros(len(SIZES), longest, 2)
    mask = torch.zeros(len(SIZES), longest, dtype=torch.bool)
    for i, (h, w) in enumerate(SIZES):
        x[i, : h * w] = torch.randn(h * w, 4, generator=generator)
        pos[i, : h * w] = grid_positions(h, w, 1)[0]
        mask[i, : h * w] = True
    return Tokens(x, pos, mask)


def _model() -> MMDiT:
    torch.manual_seed(0)
    model = MMDiT(
        [StreamSpec("image", 4, axes=2)], width=32, heads=2, joint_depth=1, single_depth=1, labels={"y": 5}
    )
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return model


def test_packing_fills_rows_and_cuts_padding():
    batch = _padded_batch()
    packed = pack(batch)
    assert packed.tokens.length == 16 and packed.tokens.batch_size < batch.batch_size
    assert packed.tokens.mask.sum() == batch.mask.sum()
    assert padding_share(packed.tokens.mask) < padding_share(batch.mask)
    with pytest.raises(ValueError, match="does not fit rows of 8"):
        pack(batch, capacity=8)


def test_packed_and_padded_batches_give_the_same_predictions_and_loss():
    model, batch = _model(), _padded_batch()
    t = torch.linspace(0.1, 0.9, len(SIZES))
    labels = {"y": torch.tensor([0, 1, 2, 3, 4, 5])}
    packed = pack(batch)
    with torch.no_grad():
        padded_out = model({"image": batch}, t, labels)["image"]
        packed_out = model({"image": packed.tokens}, t, labels, items=packed.items)["image"]
    restored = unpack(packed_out, packed, batch)
    real = batch.mask[..., None]
    torch.testing.assert_close(restored * real, padded_out * real, rtol=1e-5, atol=1e-5)
    target = torch.randn_like(batch.x)
    loss_padded = masked_mse(padded_out, target, batch.mask)
    loss_packed = masked_mse(restored, target, batch.mask)
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-6)


def test_items_in_one_row_do_not_see_each_other():
    model, batch = _model(), _padded_batch()
    t, labels = torch.full((len(SIZES),), 0.5), {"y": torch.zeros(len(SIZES), dtype=torch.long)}
    packed = pack(batch)
    row = int(packed.rows[1])
    neighbours = [i for i in range(len(SIZES)) if int(packed.rows[i]) == row and i != 1]
    assert neighbours, "the test needs item 1 to share its row"
    with torch.no_grad():
        before = unpack(
            model({"image": packed.tokens}, t, labels, items=packed.items)["image"], packed, batch
        )
        changed = packed.tokens.x.clone()
        changed[packed.items == 1] += 5.0
        after = model({"image": packed.tokens.with_x(changed)}, t, labels, items=packed.items)["image"]
        after = unpack(after, packed, batch)
    for i in neighbours:
        torch.testing.assert_close(after[i], before[i])
    assert (after[1] - before[1]).abs().max() > 1e-3


# Packing inside the training step ------------------------------------------------------------------------

AUDIO = ["model.width=32", "model.heads=2", "model.single_depth=2", "optimizer.warmup_steps=0"]
CLASSES = {"pitch": [str(i) for i in range(24)], "timbre": ["a", "b", "c"]}
SECONDS = [1.0, 0.3, 0.5, 0.25, 0.8, 0.4]  # 16, 5, 8, 4, 13 and 7 of 16 mel tokens (1 s clips)


def _audio_module(*overrides: str) -> DiffusionModule:
    torch.manual_seed(0)
    recipe = load_recipe("audio-notes", [*AUDIO, *overrides])
    return DiffusionModule(recipe, CLASSES, build_adapters(recipe))


def _clips() -> dict:
    """Notes-shaped items of several durations: a padded mel batch (zeros after each clip's end)."""
    generator = torch.Generator().manual_seed(1)
    n = len(SECONDS)
    media = 0.5 * torch.randn(n, 1, 16000, generator=generator).clamp(-2, 2)
    seconds = torch.tensor(SECONDS)
    media *= (torch.arange(16000) < seconds[:, None] * 16000)[:, None]
    labels = {"pitch": torch.arange(n), "timbre": torch.arange(n) % 3}
    return {"media": media, "labels": labels, "numbers": {"seconds": seconds}}


@pytest.mark.parametrize("objective", [[], ["objective.type=gaussian", "sample.sampler=ddpm"]])
def test_a_packed_training_step_has_the_padded_loss_on_fewer_rows(objective, monkeypatch):
    padded, packed = _audio_module(*objective), _audio_module(*objective, "data.packing=true")
    for p in padded.parameters():
        torch.nn.init.normal_(p, std=0.1)  # adaLN-Zero starts as the identity; make every block count
    packed.load_state_dict(padded.state_dict())
    batch, rows = _clips(), []
    forward = packed.model.forward

    def spy(streams, *args, **kwargs):
        rows.append(streams["audio"].batch_size)
        return forward(streams, *args, **kwargs)

    monkeypatch.setattr(packed.model, "forward", spy)
    want = padded.task_losses(batch, padded.tasks[0], 0.5, torch.Generator().manual_seed(0))["diffusion"]
    got = packed.task_losses(batch, packed.tasks[0], 0.5, torch.Generator().manual_seed(0))["diffusion"]
    # Packed rows attend over other key sets in another order: float32 rounding, not a change of loss.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)
    assert rows == [4]  # 53 real tokens fit 4 rows of 16 (first-fit decreasing), not 6
    got.backward()
    assert all(p.grad is not None for p in packed.model.parameters() if p.requires_grad)


def test_a_packed_fit_logs_the_padding_it_saved():
    module = _audio_module("data.packing=true")
    batch = _clips()
    items = [
        {
            "media": batch["media"][i],
            "labels": {k: v[i] for k, v in batch["labels"].items()},
            "numbers": {"seconds": batch["numbers"]["seconds"][i]},
        }
        for i in range(len(SECONDS))
    ]
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, train_dataloaders=DataLoader(items, batch_size=len(items)))
    logged = trainer.callback_metrics
    before, after = logged["train/padding_share"], logged["train/packed_padding_share"]
    assert before == pytest.approx(1 - 53 / 96) and after == pytest.approx(1 - 53 / 64)
    assert torch.isfinite(logged["train/loss"])


def test_packing_is_refused_where_items_cannot_share_rows():
    recipe = load_recipe("unified-digits", ["data.packing=true"])
    with pytest.raises(ValueError, match=r"packs the items of one stream; .*\['image', 'text'\]"):
        DiffusionModule(recipe, {"digit": [str(i) for i in range(10)]}, build_adapters(recipe))
