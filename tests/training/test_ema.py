"""The EMA's decay warm-up: early averages follow training instead of holding on to the initial weights."""

import pytest
import torch

from mmdit.training.ema import EMA, ema_update


def run(decay: float, updates: int) -> float:
    """Average a weight that starts at 0 and is 1 after every step; returns the average after `updates`."""
    averaged, update = [torch.zeros(1)], ema_update(decay)
    for n in range(1, updates + 1):  # AveragedModel copies on its first update and counts from 1 after
        update(averaged, [torch.ones(1)], torch.tensor(n))
    return averaged[0].item()


def test_warm_up_follows_early_training():
    # The first update moves 9/11 of the way (decay (1 + 1) / (10 + 1)); a constant 0.999 would move 0.1%.
    assert run(0.999, 1) == pytest.approx(9 / 11)
    assert run(0.999, 50) > 0.95


def test_decay_settles_at_the_configured_value():
    averaged, update = [torch.zeros(1)], ema_update(0.9)
    update(averaged, [torch.ones(1)], torch.tensor(10_000))
    assert averaged[0].item() == pytest.approx(0.1)


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_decay_outside_the_open_interval_is_refused(decay):
    with pytest.raises(ValueError, match="ema.decay"):
        EMA(decay)
