"""Gaussian diffusion against diffusers' DDPM / DDIM schedulers (same betas), and its training loss."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from mmdit.objectives.gaussian import GaussianDiffusion, linear_betas, spaced_timesteps

torch.manual_seed(0)
SHAPE = (3, 5, 4)
FLOAT64 = dict(rtol=1e-12, atol=1e-12)
"""Steps and noising are compared in float64: diffusers' schedulers keep their tables in float32, so each
comparison gives them the float64 tables of the same linear betas first (`_in_float64`)."""


def _scheduler(cls, **kw):
    return cls(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, **kw)


def _in_float64(scheduler):
    """The scheduler with its betas, alphas and ᾱ computed again in float64 (the same linear schedule)."""
    config = scheduler.config
    scheduler.betas = torch.linspace(
        config.beta_start, config.beta_end, config.num_train_timesteps, dtype=torch.float64
    )
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    if hasattr(scheduler, "final_alpha_cumprod"):  # DDIM: ᾱ before the first step
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


def _randn(*shape: int, seed: int | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def test_betas_and_alphas_match_diffusers():
    ours, theirs = GaussianDiffusion(), _scheduler(DDPMScheduler)
    ulp = torch.finfo(torch.float32).eps  # diffusers' float32 linspace lands within one ulp of each beta
    torch.testing.assert_close(ours.betas, theirs.betas.double(), rtol=ulp, atol=0)
    # diffusers' float32 cumulative product drifts by one rounding (6e-8) per step: 1000 steps, 6e-5.
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod.double(), rtol=6e-5, atol=0)
    torch.testing.assert_close(ours.alphas_cumprod, _in_float64(theirs).alphas_cumprod, **FLOAT64)
    # Other step counts are scaled so that the process ends at the same noise level.
    assert linear_betas(4000)[-1].item() == pytest.approx(0.02 * 1000 / 4000)


def test_q_sample_matches_ddpm_add_noise():
    ours, theirs = GaussianDiffusion(), _in_float64(_scheduler(DDPMScheduler))
    x0, noise, k = _randn(*SHAPE), _randn(*SHAPE), torch.tensor([0, 499, 999])
    torch.testing.assert_close(ours.q_sample(x0, noise, k), theirs.add_noise(x0, noise, k), **FLOAT64)


@pytest.mark.parametrize("prediction", ["epsilon", "v", "x0"])
def test_ddpm_step_matches_diffusers_fixed_small(prediction):
    ours = GaussianDiffusion(prediction=prediction)
    theirs = _scheduler(
        DDPMScheduler,
        variance_type="fixed_small",
        clip_sample=False,
        prediction_type={"epsilon": "epsilon", "v": "v_prediction", "x0": "sample"}[prediction],
    )
    theirs.set_timesteps(1000)
    _in_float64(theirs)
    for step in (999, 500, 3):
        xt, output = _randn(*SHAPE), _randn(*SHAPE)
        k = torch.full((SHAPE[0],), step)
        expected = theirs.step(output, step, xt, generator=torch.Generator().manual_seed(step)).prev_sample
        noise = _randn(*SHAPE, seed=step)  # the noise they drew
        torch.testing.assert_close(ours.p_sample(output, xt, k, noise), expected, **FLOAT64)


def test_learned_range_variance_matches_diffusers():
    ours = GaussianDiffusion(learn_sigma=True)
    theirs = _scheduler(DDPMScheduler, variance_type="learned_range", clip_sample=False)
    theirs.set_timesteps(1000)
    _in_float64(theirs)
    for step in (999, 250, 7):
        # diffusers splits mean and variance along dim 1 (channels); tokens put features last.
        xt, eps = _randn(*SHAPE), _randn(*SHAPE)
        values = torch.rand(SHAPE, dtype=torch.float64) * 2 - 1
        k = torch.full((SHAPE[0],), step)
        generator = torch.Generator().manual_seed(step)
        expected = theirs.step(torch.cat([eps, values], dim=1), step, xt, generator=generator).prev_sample
        noise = _randn(*SHAPE, seed=step).transpose(1, 2)
        output = torch.cat([eps, values], dim=1).transpose(1, 2)
        ours_step = ours.p_sample(output, xt.transpose(1, 2), k, noise).transpose(1, 2)
        torch.testing.assert_close(ours_step, expected, **FLOAT64)


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_matches_diffusers(eta):
    ours = GaussianDiffusion()
    theirs = _scheduler(DDIMScheduler, clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    theirs.set_timesteps(50)  # leading spacing: 980, 960, ..., 0; each step goes back by 20
    _in_float64(theirs)
    kept = theirs.timesteps.flip(0).tolist()
    spaced = GaussianDiffusion(betas=1.0 - _kept_betas(ours, kept), timesteps=kept)
    for index in (49, 20, 0):
        step = kept[index]
        xt, output, noise = _randn(*SHAPE), _randn(*SHAPE), _randn(*SHAPE)
        expected = theirs.step(output, step, xt, eta=eta, variance_noise=noise).prev_sample
        k = torch.full((SHAPE[0],), index)
        torch.testing.assert_close(spaced.ddim_step(output, xt, k, noise, eta), expected, **FLOAT64)


def _kept_betas(diffusion: GaussianDiffusion, kept: list[int]) -> torch.Tensor:
    """1 - beta of a schedule that keeps `kept` steps: ᾱ_kept[i] / ᾱ_kept[i - 1]."""
    ac = diffusion.alphas_cumprod[kept]
    return ac / torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])


def test_respacing_keeps_the_alphas_and_maps_model_time():
    full = GaussianDiffusion(learn_sigma=True)
    spaced = full.respace(250)
    kept = spaced_timesteps(1000, 250)
    assert kept[0] == 0 and kept[-1] == 999 and len(kept) == 250
    torch.testing.assert_close(spaced.alphas_cumprod, full.alphas_cumprod[kept])
    k = torch.tensor([0, 249])
    assert spaced.model_time(k).tolist() == pytest.approx([0.0, 0.999])
    assert spaced.learn_sigma and spaced.num_steps == 250


def test_hybrid_loss_trains_the_variance_only_through_the_bound():
    diffusion = GaussianDiffusion(learn_sigma=True)
    x0 = torch.rand(SHAPE) * 2 - 1
    noise = torch.randn(SHAPE)
    k = torch.tensor([0, 10, 900])
    xt = diffusion.q_sample(x0, noise, k)
    output = torch.randn(*SHAPE[:-1], 2 * SHAPE[-1], requires_grad=True)
    terms = diffusion.losses(output, x0, xt, noise, k)
    assert set(terms) == {"mse", "vb"} and terms["vb"].shape == SHAPE
    (grad_vb,) = torch.autograd.grad(terms["vb"].mean(), output, retain_graph=True)
    assert grad_vb[..., : SHAPE[-1]].abs().max() == 0  # the mean is detached in the bound
    assert grad_vb[..., SHAPE[-1] :].abs().max() > 0
    (grad_mse,) = torch.autograd.grad(terms["mse"].mean(), output)
    assert grad_mse[..., SHAPE[-1] :].abs().max() == 0
    # The bound is smallest when the predicted variance is the true posterior's (frac such that it matches).
    perfect = torch.cat([noise, -torch.ones(SHAPE)], dim=-1)  # frac = 0 -> the clipped posterior variance
    assert diffusion.losses(perfect, x0, xt, noise, k)["vb"][1:].abs().max() < 1e-4


def test_unknown_prediction_is_refused():
    with pytest.raises(ValueError, match="prediction must be one of"):
        GaussianDiffusion(prediction="score")
