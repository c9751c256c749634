"""Tokens refuse shapes that do not belong together, naming what they got."""

import pytest
import torch

from mmdit.model.tokens import Tokens


def test_consistent_tokens_and_replacing_values():
    tokens = Tokens(torch.zeros(2, 5, 3), torch.zeros(2, 5, 2), torch.ones(2, 5, dtype=torch.bool))
    assert (tokens.batch_size, tokens.length, tokens.features) == (2, 5, 3)
    moved = tokens.with_x(torch.ones(2, 5, 3))
    assert moved.pos is tokens.pos and moved.mask is tokens.mask and moved.x.sum() == 30


@pytest.mark.parametrize(
    "x, pos, mask, message",
    [
        (
            torch.zeros(2, 5),
            torch.zeros(2, 5, 2),
            torch.ones(2, 5, dtype=torch.bool),
            r"x must be \[B, N, F\]",
        ),
        (torch.zeros(2, 5, 3), torch.zeros(2, 4, 2), torch.ones(2, 5, dtype=torch.bool), r"pos must be"),
        (torch.zeros(2, 5, 3), torch.zeros(2, 5, 2), torch.ones(2, 5), r"mask must be bool"),
        (
            torch.zeros(2, 5, 3),
            torch.zeros(2, 5, 2),
            torch.ones(2, 6, dtype=torch.bool),
            r"got torch.bool \(2, 6\)",
        ),
    ],
)
def test_mismatched_shapes_are_refused(x, pos, mask, message):
    with pytest.raises(ValueError, match=message):
        Tokens(x, pos, mask)
