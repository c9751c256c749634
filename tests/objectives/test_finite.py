"""Sampling stops at the first non-finite prediction, naming step and stream (mmdit.objectives.finite)."""

import pytest
import torch

from mmdit.objectives.finite import FiniteWatch, NonFiniteSample
from mmdit.objectives.solvers import euler, heun


# Times 1, 0.8, 0.6, 0.4, 0.2, 0: Euler first predicts below 0.5 at step 4 (t = 0.4), Heun at step 3 (its
# correction at t = 0.4).
@pytest.mark.parametrize("sampler, step", [(euler, 4), (heun, 3)])
def test_the_first_non_finite_prediction_names_its_step_and_stream(sampler, step):
    def predict(x, t):
        bad = float(t[0]) < 0.5
        return {"a": torch.ones_like(x["a"]), "b": torch.full_like(x["b"], torch.nan if bad else 1.0)}

    watch = FiniteWatch(predict)
    x = {"a": torch.zeros(2, 3, 4), "b": torch.zeros(2, 5, 4)}
    times = torch.linspace(1, 0, 6)
    with pytest.raises(NonFiniteSample, match=rf"sampling step {step} of 5: the prediction of stream 'b'"):
        sampler(watch.predict, x, times, watch.progress)


def test_finite_sampling_is_unchanged_and_passes_through_progress():
    seen = []

    def progress(steps):
        seen.append(len(steps))
        return iter(steps)

    def predict(x, t):
        return {"a": -x["a"]}

    watch = FiniteWatch(predict, progress)
    x = {"a": torch.randn(2, 3, 4, dtype=torch.float64)}
    times = torch.linspace(1, 0, 4, dtype=torch.float64)
    assert torch.equal(euler(watch.predict, x, times, watch.progress)["a"], euler(predict, x, times)["a"])
    assert seen == [3] and (watch.step, watch.steps) == (3, 3)
