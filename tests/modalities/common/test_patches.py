"""2D patch tokens: exact patchify / unpatchify round trips and the row-major token order."""

import pytest
import torch

from modalities.common.patches import patchify, unpatchify


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("p", [1, 2, 4])
def test_patchify_round_trip_is_exact(channels, p):
    images = torch.randn(2, channels, 3 * p, 5 * p)
    x, pos = patchify(images, p)
    assert x.shape == (2, 15, p * p * channels) and pos.shape == (2, 15, 2)
    assert torch.equal(unpatchify(x, pos, p, channels), images)


def test_token_order_and_positions_are_row_major():
    images = torch.arange(4 * 6, dtype=torch.float32).reshape(1, 1, 4, 6)
    x, pos = patchify(images, 2)
    # Token index = h * W_p + w with W_p = 3; each token holds its patch's pixels row by row.
    assert pos[0].tolist() == [[h, w] for h in range(2) for w in range(3)]
    assert x[0, 4].tolist() == [14.0, 15.0, 20.0, 21.0]
