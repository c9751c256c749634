"""A warning when the training loss grows by orders of magnitude (mmdit.training.divergence)."""

import warnings
from types import SimpleNamespace

import pytest
import torch

from mmdit.training.divergence import LossDivergence


def feed(callback: LossDivergence, losses: list[float]) -> None:
    for step, loss in enumerate(losses):
        callback.on_train_batch_end(
            SimpleNamespace(global_step=step), None, {"loss": torch.tensor(loss)}, None, 0
        )


def test_a_loss_a_thousand_times_its_lowest_warns_once_naming_both_steps():
    callback = LossDivergence()
    with pytest.warns(
        UserWarning, match=r"diverges: 400 at step 4, over 1000 times its lowest, 0.3 at step 2"
    ) as seen:
        feed(callback, [1.0, 0.5, 0.3, 200.0, 400.0, 5e4, 1e29])
    assert len([w for w in seen if "diverges" in str(w.message)]) == 1


def test_a_healthy_noisy_loss_does_not_warn():
    callback = LossDivergence()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        feed(callback, [2.0, 0.5, 1.5, 0.05, 0.4, 20.0, 0.04])
