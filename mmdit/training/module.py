"""The LightningModule: adapters + MMDiT + rectified flow (or Gaussian diffusion). Lightning owns the loop,
precision, devices, strategy, clipping, accumulation, EMA and checkpoints; this class only says what one step
computes."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from mmdit.model.backbone import MMDiT
from mmdit.model.packing import pack, padding_share, unpack
from mmdit.model.presets import preset
from mmdit.model.tokens import Tokens, masked_mean
from mmdit.objectives.gaussian import GaussianDiffusion
from mmdit.objectives.guidance import guided_prediction, null_labels
from mmdit.objectives.objective import build_objective, check_sampler
from mmdit.objectives.samplers import sampler
from mmdit.recipe import from_yaml
from mmdit.training.data import data_stream
from mmdit.training.step_noise import StepNoise, step_generator
from modalities import build_adapter

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
"""Lightning's mixed precisions -> the autocast dtype they train the network in."""


def model_sizes(model: DictConfig) -> dict[str, Any]:
    """A recipe's `model` section -> MMDiT keyword arguments (preset first, explicit keys override)."""
    sizes = preset(model.preset) if model.preset else {}
    sizes.pop("patch_size", None)  # belongs to the image stream's options
    sizes.update({k: v for k, v in model.items() if k != "preset" and v is not None})
    for key in ("width", "heads"):
        if key not in sizes:
            raise KeyError(f"model.{key} is not set (give it, or a model.preset)")
    return sizes


def learning_rate_factor(step: int, warmup: int, decay: str, total: int) -> float:
    """Multiplier of the base learning rate at optimizer step `step`: linear warm-up over `warmup` steps, then
    constant, or a cosine decay that reaches 0 at step `total`."""
    if step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


FUSED_ADAMW_DEVICES = ("cpu", "cuda", "mps", "xpu")
"""Device types with torch's single-kernel (`fused=True`) AdamW."""


def optimizer_and_schedule(
    parameters: Iterable[nn.Parameter], opt: DictConfig, total_steps: int, scaled_loss: bool = False
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """A recipe's `optimizer` section -> AdamW over the trainable `parameters` and its per-step schedule
    (linear warm-up, then constant or a cosine to zero at `total_steps`).

    With `optimizer.fused` the AdamW is torch's fused one where every parameter's device has it: one kernel
    over all tensors instead of a dozen foreach ops that each sweep all of them (docs/performance.md); the
    same update to float32 rounding. Not under a `scaled_loss` (16-mixed's GradScaler): a fused AdamW
    unscales the gradients inside its step, after Lightning would have clipped them."""
    if opt.decay not in ("constant", "cosine"):
        raise ValueError(f"optimizer.decay must be constant or cosine, got {opt.decay!r}")
    if opt.decay == "cosine" and total_steps <= opt.warmup_steps:
        raise ValueError("optimizer.decay=cosine needs trainer.max_steps larger than optimizer.warmup_steps")
    trainable = [p for p in parameters if p.requires_grad]
    fused = opt.fused and not scaled_loss and all(p.device.type in FUSED_ADAMW_DEVICES for p in trainable)
    optimizer = torch.optim.AdamW(
        trainable, lr=opt.lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay, fused=fused or None
    )
    factor = partial(learning_rate_factor, warmup=opt.warmup_steps, decay=opt.decay, total=total_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class DiffusionModule(L.LightningModule):
    """recipe: a checked recipe (DictConfig or its plain-dict form); classes: {label: [class names]} of the
    training data, which size the label tables and let users ask for classes by name."""

    def __init__(self, recipe: DictConfig | dict, classes: Mapping[str, list[str]]):
        super().__init__()
        recipe = OmegaConf.create(recipe) if not isinstance(recipe, DictConfig) else recipe
        self.save_hyperparameters({"recipe": OmegaConf.to_container(recipe), "classes": dict(classes)})
        self.recipe, self.classes = recipe, dict(classes)
        self.adapters = {name: build_adapter(s.modality, **s.options) for name, s in recipe.streams.items()}
        self.stream = data_stream(recipe)
        missing = [k for k in recipe.conditioning.labels if k not in classes]
        if missing:
            raise KeyError(
                f"conditioning.labels {missing} are not labels of the data; it has {list(classes)}"
            )
        if recipe.data.packing and (len(recipe.streams) > 1 or recipe.tasks):
            raise ValueError(
                f"data.packing packs the items of one stream; this recipe has streams {list(recipe.streams)}"
                + (" and tasks (a unified recipe)" if recipe.tasks else "")
                + ": set data.packing=false"
            )
        self.objective = build_objective(recipe.objective)
        check_sampler(recipe.objective.type, recipe.sample.sampler)  # fails now, not at the first preview
        specs = [adapter.stream(name) for name, adapter in self.adapters.items()]
        if getattr(self.objective, "learn_sigma", False):
            specs = [replace(s, out_features=2 * s.features) for s in specs]
        self.model = MMDiT(
            specs,
            labels={k: len(classes[k]) for k in recipe.conditioning.labels},
            numbers=list(recipe.conditioning.numbers),
            **model_sizes(recipe.model),
        )

    # training ------------------------------------------------------------------------------------------

    def step_noise(self, generator: torch.Generator | None = None) -> StepNoise:
        """The draws of a loss: from `generator` when given (validation's fixed draws); in training, this
        rank's share of the global batch's draws (`mmdit.training.step_noise`), seeded by the recipe seed and
        the training batch index across epochs (the optimizer step without gradient accumulation; with it,
        each micro-batch draws its own); outside a trainer, from torch's global RNG."""
        if generator is not None:
            return StepNoise(generator, device=self.device)
        trainer = self._trainer
        if trainer is None:  # called by hand (a benchmark, a notebook): fresh draws from torch's global RNG
            return StepNoise(torch.default_generator, device=self.device)
        step = max(trainer.fit_loop.total_batch_idx, 0)
        return StepNoise(
            step_generator(self.recipe.seed, step), trainer.global_rank, trainer.world_size, self.device
        )

    def _labels(self, batch: Mapping[str, Any], drop: float, draws: StepNoise) -> dict[str, Tensor]:
        """The conditioning labels of a batch; with probability `drop` an item's labels become the null
        class (all keys together, so the model also learns the fully unconditional velocity)."""
        labels = {k: batch["labels"][k] for k in self.recipe.conditioning.labels}
        if drop <= 0 or not labels:
            return labels
        first = next(iter(labels.values()))
        dropped = draws.uniform(len(first)).to(first.device) < drop
        nulls = null_labels(self.model, labels)
        return {k: torch.where(dropped, nulls[k], v) for k, v in labels.items()}

    def requested_numbers(self, n: int, numbers: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        """A request's numbers ({name: [n]}) with the names it leaves out taken from the data adapter's
        `default_numbers` (e.g. a clip's default seconds)."""
        defaults = self.adapters[self.stream].default_numbers()
        return {**{k: torch.full((n,), float(v)) for k, v in defaults.items()}, **(numbers or {})}

    def conditioning_numbers(self, numbers: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The recipe's `conditioning.numbers` out of a batch's or a request's numbers, as float [B]."""
        missing = [k for k in self.recipe.conditioning.numbers if k not in numbers]
        if missing:
            raise KeyError(
                f"conditioning.numbers {missing} are not numbers of the data; it has {sorted(numbers)}"
            )
        return {k: numbers[k].float().to(self.device) for k in self.recipe.conditioning.numbers}

    def data_tokens(self, batch: Mapping[str, Any], numbers: Mapping[str, Tensor]) -> Tokens:
        """The data stream's tokens of a batch: the encoding `mmdit prepare` cached when the batch carries
        it (`data.cache: true`), else the adapter's encoding of the batch's media."""
        if "tokens" in batch:
            return Tokens(**batch["tokens"])
        return self.adapters[self.stream].encode(batch["media"], numbers)

    def diffusion_loss(
        self, batch: Mapping[str, Any], drop: float, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """{stream: loss} for one batch: noise every stream to a shared time, predict the velocity (flow) or
        the ε / v / x0 target plus the variational bound of a learned variance (Gaussian). Noise, times and
        label dropout come from `step_noise(generator)`.

        Each loss is a mean over this batch's real tokens. Under DDP, Lightning averages the ranks'
        gradients, i.e. of the per-rank means: that is the mean over the global batch exactly when every
        rank holds as many real tokens (always for items without padding), and a mean of per-rank means
        otherwise, as with any DDP loss."""
        draws = self.step_noise(generator)
        numbers = batch.get("numbers", {})
        tokens = {self.stream: self.data_tokens(batch, numbers)}
        batch_size = tokens[self.stream].batch_size
        noise = {s: draws.normal(tok.x.shape).to(tok.x) for s, tok in tokens.items()}
        conditions = dict(labels=self._labels(batch, drop, draws), numbers=self.conditioning_numbers(numbers))
        if isinstance(self.objective, GaussianDiffusion):
            k = draws(lambda n, g: self.objective.sample_steps(n, generator=g), batch_size)
            noised = {s: self.objective.q_sample(tok.x, noise[s], k) for s, tok in tokens.items()}
            inputs = {s: tok.with_x(noised[s]) for s, tok in tokens.items()}
            out = self._predict(inputs, self.objective.model_time(k), conditions)
            return {
                s: sum(
                    masked_mean(term, tok.mask)
                    for term in self.objective.losses(out[s], tok.x, noised[s], noise[s], k).values()
                )
                for s, tok in tokens.items()
            }
        flow = self.objective
        t = draws(lambda n, g: flow.sample_time(n, generator=g), batch_size)
        noised = {s: tok.with_x(flow.add_noise(tok.x, noise[s], t)) for s, tok in tokens.items()}
        predictions = self._predict(noised, t, conditions)
        return {
            s: flow.loss(
                flow.velocity(predictions[s], noised[s].x, t), flow.target(tok.x, noise[s]), tok.mask
            )
            for s, tok in tokens.items()
        }

    def _predict(
        self, noised: Mapping[str, Tokens], t: Tensor, conditions: Mapping[str, Any]
    ) -> dict[str, Tensor]:
        """The model's outputs {stream: [B, N, F_out]} on noised tokens. With `data.packing` the (one)
        stream's items are packed into rows of the padded length, so the model runs on fewer rows, and
        its output is unpacked to the padded layout (zeros on padding, which the loss's mask ignores).
        Training logs the padding share of both layouts."""
        if not self.recipe.data.packing:
            return self.model(noised, t, **conditions)
        tokens = noised[self.stream]
        packed = pack(tokens, capacity=tokens.length)
        if self.training and self._trainer is not None:
            self.log("train/padding_share", padding_share(tokens.mask))
            self.log("train/packed_padding_share", padding_share(packed.tokens.mask))
        out = self.model({self.stream: packed.tokens}, t, **conditions, items=packed.items)
        return {self.stream: unpack(out[self.stream], packed, tokens)}

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        losses = self.diffusion_loss(batch, self.recipe.conditioning.dropout)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            detail = ", ".join(f"{s}={v.item():.4g}" for s, v in losses.items())
            raise FloatingPointError(
                f"loss is not finite at step {self.global_step} ({detail}); lower optimizer.lr, set "
                "trainer.gradient_clip_val, or check the data for NaN values"
            )
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        # Fixed noise and times per batch, so validation losses are comparable across the run.
        generator = torch.Generator().manual_seed(batch_idx)
        losses = self.diffusion_loss(batch, drop=0.0, generator=generator)
        self.log("val/loss", sum(losses.values()), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        optimizer, schedule = optimizer_and_schedule(
            self.parameters(), self.recipe.optimizer, self.trainer.max_steps, scaled_loss=scaled
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Lightning's mixed-precision plugin refuses to clip for any optimizer that can unscale in its step
        (the fused AdamW), bf16-mixed included; without a scaler there is nothing to unscale, so the
        gradients are clipped as in 32-bit training."""
        plugin = self.trainer.precision_plugin
        if isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            value = self.trainer.gradient_clip_val if gradient_clip_val is None else gradient_clip_val
            algorithm = gradient_clip_algorithm or self.trainer.gradient_clip_algorithm or "norm"
            Precision.clip_gradients(plugin, optimizer, value or 0.0, GradClipAlgorithmType(algorithm))
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # sampling ------------------------------------------------------------------------------------------

    def preview_label_keys(self) -> list[str]:
        """The label keys preview grids ask for, one class per column."""
        return list(self.model.label_embedders)

    def class_index(self, key: str, value: str | int) -> int:
        """A class given by name ("7", "cat") or index -> its index; unknown ones list the valid names."""
        names = self.classes[key]
        if str(value) in names:
            return names.index(str(value))
        if isinstance(value, int) or str(value).isdigit():
            if 0 <= int(value) < len(names):
                return int(value)
        raise KeyError(f"label {key!r} has no class {value!r}; classes: {names}")

    @torch.no_grad()
    def generate(
        self,
        n: int,
        labels: Mapping[str, Tensor] | None = None,
        numbers: Mapping[str, Tensor] | None = None,
        *,
        steps: int | None = None,
        method: str | None = None,
        cfg: float | None = None,
        seed: int = 0,
        progress: Callable = iter,
    ) -> dict[str, Tensor]:
        """Sample n items per stream: {stream: media [n, ...]} as the adapters decode them.

        labels: {key: [n] class indices}; omitted keys are sampled unconditionally (null class).
        numbers: {name: [n] float} (e.g. seconds); omitted names take the data adapter's `default_numbers`.
        They reach every adapter's `layout` (which masks tokens past each item's extent) and the model.
        steps / method / cfg default to the recipe's `sample` section; other sizes are the adapters'
        defaults."""
        settings = self.recipe.sample
        steps, method = steps or settings.steps, method or settings.sampler
        cfg = settings.cfg if cfg is None else cfg
        was_training = self.training
        self.eval()
        numbers = self.requested_numbers(n, numbers)
        layouts = {s: a.layout(n, numbers).to(self.device) for s, a in self.adapters.items()}
        full = {
            k: torch.full((n,), self.model.label_embedders[k].null_index) for k in self.model.label_embedders
        }
        full.update(labels or {})
        full = {k: v.to(self.device) for k, v in full.items()}
        check_sampler(self.recipe.objective.type, method)
        generator = torch.Generator().manual_seed(seed)
        noise = {s: torch.randn(tok.x.shape, generator=generator).to(tok.x) for s, tok in layouts.items()}
        predict = guided_prediction(
            self.model,
            layouts,
            full,
            scale=cfg,
            numbers=self.conditioning_numbers(numbers),
            guided_features=self._guided_features(),
        )
        if isinstance(self.objective, GaussianDiffusion):
            with self.precision_autocast():
                x = self.objective.respace(steps).sample(predict, noise, method, progress, generator)
        else:
            flow = self.objective

            def velocity(x: dict[str, Tensor], t: Tensor) -> dict[str, Tensor]:
                return {s: flow.velocity(out, x[s], t) for s, out in predict(x, t).items()}

            with self.precision_autocast():
                x = sampler(method)(velocity, noise, flow.schedule(steps, self.device), progress)
        self.train(was_training)
        return {s: self.adapters[s].decode(tok.with_x(x[s])) for s, tok in layouts.items()}

    def precision_autocast(self) -> contextlib.AbstractContextManager:
        """Autocast on this module's device in the precision the recipe trains in (`trainer.precision`
        bf16-mixed or 16-mixed; none for the others), for running the network outside Lightning. Sampling
        uses it: the weights were fitted to that precision, and on a GPU or a CPU with bf16 units it is the
        faster one; the sampler's state stays float32."""
        dtype = AUTOCAST_DTYPES.get(str(self.recipe.trainer.get("precision", "32-true")))
        return torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def _guided_features(self) -> dict[str, Tensor]:
        """{stream: [F_out] bool}: the output features classifier-free guidance mixes. A learned variance is
        never guided; `sample.guided_channels: C` guides only the first C channels of each patch (features
        are laid out channel-fastest), as DiT's released sampling guided 3 of its 4 latent channels."""
        guided, channels = {}, self.recipe.sample.guided_channels
        for name, spec in self.model.specs.items():
            mask = torch.arange(spec.out_features or spec.features) < spec.features
            if channels is not None:
                per_patch = getattr(self.adapters[name], "channels", None)
                if per_patch is None:
                    raise ValueError(
                        f"sample.guided_channels needs a stream with channels; {name!r} has none"
                    )
                mask &= torch.arange(len(mask)) % per_patch < channels
            guided[name] = mask
        return guided

    # weights -------------------------------------------------------------------------------------------

    @classmethod
    def from_weights(cls, path: str | Path, map_location: str = "cpu") -> DiffusionModule:
        """Load an exported `.safetensors` (recipe and classes in its metadata) or a Lightning `.ckpt`
        (whose state holds the EMA weights when EMA was on)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"weights file {path} does not exist")
        if path.suffix == ".ckpt":
            # Read once: the hyperparameters say which module class the recipe trains, the state its weights.
            checkpoint = torch.load(path, map_location=map_location, weights_only=False)
            hparams = checkpoint["hyper_parameters"]
            module = module_class(hparams["recipe"])(hparams["recipe"], hparams["classes"])
            module.load_state_dict(checkpoint["state_dict"])
            return module
        if path.suffix != ".safetensors":
            raise ValueError(f"{path}: expected a .safetensors export or a Lightning .ckpt")
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        if "backbone" in meta and "recipe" not in meta:
            raise ValueError(
                f"{path} is a converted backbone without a recipe (SD3 needs text-encoder streams mmdit does "
                "not ship); load it with mmdit.convert.load_backbone"
            )
        if "recipe" not in meta or "classes" not in meta:
            raise ValueError(f"{path}: no mmdit recipe in its metadata; was it written by `mmdit export`?")
        recipe = from_yaml(meta["recipe"])
        module = module_class(recipe)(recipe, json.loads(meta["classes"]))
        module.model.load_state_dict(load_file(path, device=map_location))
        return module


def module_class(recipe: DictConfig | Mapping[str, Any]) -> type[DiffusionModule]:
    """The LightningModule a recipe trains: a unified one when it lists tasks."""
    if recipe.get("tasks"):
        from mmdit.training.unified import UnifiedModule

        return UnifiedModule
    return DiffusionModule
