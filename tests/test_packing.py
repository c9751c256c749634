"""Packed rows compute what a padded batch computes: same predictions on real tokens, same loss."""

import pytest
import torch

from mmdit.backbone import MMDiT, StreamSpec
from mmdit.flow import RectifiedFlow
from mmdit.packing import pack, padding_share, unpack
from mmdit.tokens import Tokens
from modalities.image import grid_positions

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
    loss_padded = RectifiedFlow.loss(padded_out, target, batch.mask)
    loss_packed = RectifiedFlow.loss(restored, target, batch.mask)
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
