"""Gaussian diffusion (DDPM) on tokens, with DiT's settings, next to rectified flow.

Discrete steps k = 0 .. T-1 with linear betas from 1e-4 to 0.02 (scaled by 1000 / T), so that
x_k = sqrt(ᾱ_k)·x0 + sqrt(1 − ᾱ_k)·ε. The backbone sees k / 1000 (it multiplies by 1000 again), which makes
DiT's integer timestep and rectified flow's t · 1000 the same embedding.

The model predicts ε, v or x0 (`prediction`); with `learn_sigma` its output has twice the token features and
the second half interpolates the log variance between the posterior's and β_k (IDDPM's learned range), trained
by the hybrid loss MSE + variational bound on a detached mean. A diffusion respaced to fewer steps
(`respace`) keeps the ᾱ of the kept steps, as IDDPM / DiT sample with 250 of 1000 steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from mmdit.model.tokens import masked_mean
from mmdit.objectives.objective import Noised, Objective, Predict, State

PREDICTIONS = ("epsilon", "v", "x0")


def linear_betas(steps: int) -> Tensor:
    """DDPM's linear schedule, float64 [steps]: 1e-4 -> 0.02 at 1000 steps, scaled by 1000 / steps."""
    scale = 1000 / steps
    return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)


def spaced_timesteps(steps: int, count: int) -> list[int]:
    """`count` of `steps` timesteps, evenly strided and including the first and last (DiT's respacing)."""
    if not 1 <= count <= steps:
        raise ValueError(f"cannot respace {steps} diffusion steps to {count}")
    if count == 1:
        return [steps - 1]
    stride = (steps - 1) / (count - 1)
    return sorted({round(i * stride) for i in range(count)})


def _at(values: Tensor, k: Tensor, like: Tensor) -> Tensor:
    """values[k] for k [B], shaped to broadcast against like [B, ...], in like's dtype."""
    return values.to(like.device)[k].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x) elementwise for x in [-1, 1] quantised to 256 levels, under N(mean, e^(2 log_scale))."""
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centred + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centred - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _approx_standard_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


class GaussianDiffusion(Objective):
    """steps: T training steps; prediction: "epsilon", "v" or "x0"; learn_sigma: the model also outputs the
    learned-range variance (token features doubled). `timesteps` (set by `respace`) are the original step
    indices this diffusion's steps stand for; the model is always given those."""

    samplers: ClassVar[tuple[str, ...]] = ("ddpm", "ddim")
    kind: ClassVar[str] = "gaussian"

    def __init__(
        self,
        steps: int = 1000,
        prediction: str = "epsilon",
        learn_sigma: bool = False,
        betas: Tensor | None = None,
        timesteps: Sequence[int] | None = None,
    ):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.prediction, self.learn_sigma = prediction, learn_sigma
        self.betas = linear_betas(steps) if betas is None else betas.double()
        self.num_steps = len(self.betas)
        self.timesteps = torch.arange(self.num_steps) if timesteps is None else torch.tensor(list(timesteps))
        alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        ac, ac_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        self.posterior_variance = self.betas * (1.0 - ac_prev) / (1.0 - ac)
        # The posterior variance is 0 at k = 0; its log is clipped to the next step's value (IDDPM).
        clipped = torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        self.posterior_log_variance_clipped = torch.log(clipped)
        self.posterior_mean_coef_x0 = self.betas * ac_prev.sqrt() / (1.0 - ac)
        self.posterior_mean_coef_xt = (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac)

    def respace(self, count: int) -> GaussianDiffusion:
        """The same process on `count` evenly spaced of its steps: betas recomputed from the kept ᾱ."""
        kept = spaced_timesteps(self.num_steps, count)
        kept_ac = self.alphas_cumprod[kept]
        previous = torch.cat([torch.ones(1, dtype=torch.float64), kept_ac[:-1]])
        return GaussianDiffusion(
            prediction=self.prediction,
            learn_sigma=self.learn_sigma,
            betas=1.0 - kept_ac / previous,
            timesteps=self.timesteps[kept].tolist(),
        )

    # the forward process -------------------------------------------------------------------------------

    def model_time(self, k: Tensor) -> Tensor:
        """Step indices [B] -> the backbone's time input in [0, 1): original step / 1000."""
        return self.timesteps.to(k.device)[k].float() / 1000.0

    def sample_steps(self, batch_size: int, device: torch.device | str = "cpu", generator=None) -> Tensor:
        """[B] training steps, uniform over 0 .. T-1."""
        return torch.randint(0, self.num_steps, (batch_size,), device=device, generator=generator)

    def q_sample(self, x0: Tensor, noise: Tensor, k: Tensor) -> Tensor:
        """x_k = sqrt(ᾱ_k) x0 + sqrt(1 − ᾱ_k) ε. x0, noise: [B, ...]; k: [B]."""
        ac = _at(self.alphas_cumprod, k, x0)
        return ac.sqrt() * x0 + (1 - ac).sqrt() * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, k: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log variance of q(x_{k-1} | x_k, x0)."""
        mean = _at(self.posterior_mean_coef_x0, k, xt) * x0 + _at(self.posterior_mean_coef_xt, k, xt) * xt
        return mean, _at(self.posterior_variance, k, xt), _at(self.posterior_log_variance_clipped, k, xt)

    def target(self, x0: Tensor, noise: Tensor, k: Tensor) -> Tensor:
        """What the model regresses: ε, v = sqrt(ᾱ) ε − sqrt(1 − ᾱ) x0, or x0."""
        if self.prediction == "epsilon":
            return noise
        if self.prediction == "x0":
            return x0
        ac = _at(self.alphas_cumprod, k, x0)
        return ac.sqrt() * noise - (1 - ac).sqrt() * x0

    # the reverse process -------------------------------------------------------------------------------

    def split(self, output: Tensor) -> tuple[Tensor, Tensor | None]:
        """Model output [B, N, F or 2F] -> (prediction [B, N, F], variance values in [-1, 1] or None)."""
        if not self.learn_sigma:
            return output, None
        prediction, variance = output.chunk(2, dim=-1)
        return prediction, variance

    def predict_x0_and_eps(self, prediction: Tensor, xt: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """The model's prediction (of kind `self.prediction`) -> its implied x0 and ε."""
        ac = _at(self.alphas_cumprod, k, xt)
        if self.prediction == "epsilon":
            x0 = (xt - (1 - ac).sqrt() * prediction) / ac.sqrt()
        elif self.prediction == "v":
            x0 = ac.sqrt() * xt - (1 - ac).sqrt() * prediction
        else:
            x0 = prediction
        return x0, (xt - ac.sqrt() * x0) / (1 - ac).sqrt()

    def p_mean_variance(
        self, output: Tensor, xt: Tensor, k: Tensor, clip: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Mean and log variance of p(x_{k-1} | x_k), and the predicted x0.

        Fixed variance: the posterior's (DDPM's "fixed small"). Learned: exp of frac·log β_k +
        (1 − frac)·log σ̃²_k with frac = (v + 1) / 2, v the second half of the output."""
        prediction, values = self.split(output)
        x0, _ = self.predict_x0_and_eps(prediction, xt, k)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, _, min_log = self.q_posterior(x0, xt, k)
        if values is None:
            return mean, min_log, x0
        max_log = _at(torch.log(self.betas), k, xt)
        frac = (values + 1) / 2
        return mean, frac * max_log + (1 - frac) * min_log, x0

    def p_sample(self, output: Tensor, xt: Tensor, k: Tensor, noise: Tensor, clip: bool = False) -> Tensor:
        """One ancestral DDPM step x_k -> x_{k-1} (no noise is added at k = 0)."""
        mean, log_variance, _ = self.p_mean_variance(output, xt, k, clip)
        nonzero = (k != 0).to(xt.dtype).reshape(-1, *([1] * (xt.ndim - 1)))
        return mean + nonzero * torch.exp(0.5 * log_variance) * noise

    def ddim_step(
        self, output: Tensor, xt: Tensor, k: Tensor, noise: Tensor | None = None, eta: float = 0.0
    ) -> Tensor:
        """One DDIM step x_k -> x_{k-1} (η = 0: deterministic). A learned variance is ignored."""
        prediction, _ = self.split(output)
        x0, eps = self.predict_x0_and_eps(prediction, xt, k)
        ac, ac_prev = _at(self.alphas_cumprod, k, xt), _at(self.alphas_cumprod_prev, k, xt)
        sigma = eta * ((1 - ac_prev) / (1 - ac)).sqrt() * (1 - ac / ac_prev).sqrt()
        x = ac_prev.sqrt() * x0 + (1 - ac_prev - sigma**2).sqrt() * eps
        if eta > 0:
            if noise is None:
                raise ValueError("a DDIM step with eta > 0 needs noise")
            x = x + sigma * noise
        return x

    # training ------------------------------------------------------------------------------------------

    def losses(self, output: Tensor, x0: Tensor, xt: Tensor, noise: Tensor, k: Tensor) -> dict[str, Tensor]:
        """Per-element loss terms [B, N, F]: "mse" on the prediction, and with a learned variance "vb",
        the variational bound in bits whose mean is detached (IDDPM's hybrid loss: only the variance learns
        from it), scaled by T / 1000 as DiT does."""
        prediction, values = self.split(output)
        terms = {"mse": (prediction.float() - self.target(x0, noise, k).float()) ** 2}
        if values is None:
            return terms
        frozen = torch.cat([prediction.detach(), values], dim=-1)
        model_mean, model_log_variance, _ = self.p_mean_variance(frozen, xt, k)
        true_mean, _, true_log_variance = self.q_posterior(x0, xt, k)
        kl = normal_kl(true_mean, true_log_variance, model_mean, model_log_variance) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_variance) / math.log(2.0)
        first = (k == 0).reshape(-1, *([1] * (x0.ndim - 1)))
        terms["vb"] = torch.where(first, nll, kl).float() * (self.num_steps / 1000.0)
        return terms

    # sampling ------------------------------------------------------------------------------------------

    def draw_time(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        return self.sample_steps(batch_size, generator=generator)

    def noise(self, x0: Tensor, noise: Tensor, time: Tensor) -> Noised:
        return Noised(x0, noise, self.q_sample(x0, noise, time), time, self.model_time(time))

    def loss(self, output: Tensor, sample: Noised, mask: Tensor) -> Tensor:
        """The sum of the loss terms (MSE, and the bound of a learned variance), each a mean over the real
        tokens."""
        terms = self.losses(output, sample.x0, sample.x_t, sample.noise, sample.time)
        return sum(masked_mean(term, mask) for term in terms.values())

    def output_features(self, features: int) -> int:
        return 2 * features if self.learn_sigma else features

    def sample(
        self,
        predict: Predict,
        noise: State,
        steps: int,
        sampler: str,
        progress: Callable = iter,
        generator: torch.Generator | None = None,
        schedule: str = "uniform",
    ) -> State:
        """The reverse process over `steps` evenly spaced of the T training steps (`respace`)."""
        self.check_sampler(sampler)
        self.check_schedule(schedule)
        return self.respace(steps).reverse(predict, noise, sampler, progress, generator)

    def reverse(
        self,
        predict: Predict,
        x: State,
        method: str = "ddpm",
        progress: Callable = iter,
        generator: torch.Generator | None = None,
    ) -> State:
        """Run the reverse process over all of this diffusion's steps.

        predict: {stream: x_k [B, N, F]}, model time [B] -> {stream: output}; x: the noise at the last step.
        method: "ddpm" (ancestral, fresh noise from `generator` each step) or "ddim" (deterministic)."""
        batch = next(iter(x.values())).shape[0]
        device = next(iter(x.values())).device
        for step in progress(list(reversed(range(self.num_steps)))):
            k = torch.full((batch,), step, device=device)
            out = predict(x, self.model_time(k))
            if method == "ddim":
                x = {s: self.ddim_step(out[s], v, k) for s, v in x.items()}
                continue
            noise = {s: torch.randn(v.shape, generator=generator).to(v) for s, v in x.items()}
            x = {s: self.p_sample(out[s], v, k, noise[s]) for s, v in x.items()}
        return x
