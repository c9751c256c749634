"""N-D patch tokens: exact patchify / unpatchify round trips over 1, 2 and 3 axes, and the row-major token
order with channel-fastest features (DiT's, which the converters rely on)."""

import pytest
import torch

from modalities.common.patches import grid_positions, patchify, unpatchify


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize(
    "patch", [(4,), (1, 1), (2, 2), (4, 2), (1, 1, 1), (2, 4, 4), (4, 2, 8), (1, 8, 8)], ids=str
)
def test_round_trip_is_exact_over_any_axes(channels, patch):
    cells = (3, 2, 2)[: len(patch)]
    media = torch.randn(2, channels, *(c * p for c, p in zip(cells, patch, strict=True)))
    x, pos = patchify(media, patch)
    count = torch.tensor(cells).prod().item()
    assert x.shape == (2, count, torch.tensor(patch).prod().item() * channels)
    assert pos.shape == (2, count, len(patch))
    assert torch.equal(unpatchify(x, pos, patch, channels), media)


def test_one_int_patches_every_axis():
    media = torch.randn(1, 2, 4, 6)
    assert torch.equal(patchify(media, 2)[0], patchify(media, (2, 2))[0])
    x, pos = patchify(media, 2)
    assert torch.equal(unpatchify(x, pos, 2, 2), media)


def test_2d_token_order_and_positions_are_row_major():
    images = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 1, 4, 6)
    x, pos = patchify(images, 2)
    # Token index = h * W_p + w with W_p = 3; each token holds its patch's pixels row by row.
    assert pos[0].tolist() == [[h, w] for h in range(2) for w in range(3)]
    assert x[0, 4].tolist() == [14.0, 15.0, 20.0, 21.0]


def test_3d_token_order_and_channels_fastest():
    clips = torch.arange(4 * 4 * 4, dtype=torch.float32).reshape(1, 1, 4, 4, 4)  # value = 16 t + 4 h + w
    x, pos = patchify(clips, (2, 2, 2))
    assert pos[0].tolist() == [[t, h, w] for t in range(2) for h in range(2) for w in range(2)]
    # Token (t=1, h=0, w=1): frames 2-3, rows 0-1, columns 2-3, frame-major then row-major.
    assert x[0, 5].tolist() == [34.0, 35.0, 38.0, 39.0, 50.0, 51.0, 54.0, 55.0]
    two = torch.stack([torch.zeros(2), torch.ones(2)])[None, :, :]  # [1, C=2, 2]: channel c holds c
    assert patchify(two, 2)[0][0, 0].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_grid_positions_are_indices_in_row_major_order():
    assert grid_positions([3], 2).tolist() == [[[0.0], [1.0], [2.0]]] * 2
    assert grid_positions([2, 2, 1], 1)[0].tolist() == [[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0]]


def test_shapes_that_do_not_fit_are_named():
    with pytest.raises(ValueError, match=r"\(1, 1, 3, 4, 4\)"):
        patchify(torch.zeros(1, 1, 3, 4, 4), (2, 2, 2))
    x, pos = patchify(torch.zeros(1, 1, 4, 4), 2)
    with pytest.raises(ValueError, match=r"2×2 grid"):
        unpatchify(x[:, :3], pos, 2, 1)
