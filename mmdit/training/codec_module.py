"""The codec stage: a recipe with an `autoencoder:` section trains a codec of its `kind` (mmdit.codecs.kinds:
a convolutional VAE by default) on its data stream's media, with the same Trainer, optimizer policy, EMA,
checkpoints and previews as a diffusion recipe. Its export (codec.safetensors) is what an adapter's
`codec` option loads, so the diffusion stage learns latents.

The loss is the adapter's `reconstruction_loss` plus `kl_weight` times the KL per latent element. The codec
sees the adapter's `codec_values` of the media (what its tokenizer feeds a codec); media whose extent is not
a multiple of the downsampling are zero-padded at the end (clips of a video codec: time padded to the frames
it takes, 1 + k·ft when causal, by repeating the last frame) and cropped back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from mmdit.codecs.kinds import DEFAULT_KIND, codec_kind, kind_of
from mmdit.codecs.loaded import time_folding
from mmdit.contract import ModalityAdapter
from mmdit.training.optim import RecipeOptimization
from mmdit.training.step_noise import step_generator


def codec_config(recipe: DictConfig, item_shape: tuple[int, ...], adapter: ModalityAdapter) -> Any:
    """The config of the recipe's codec kind (`autoencoder.kind`) for media items of `item_shape` [C,
    *extent] read by `adapter`."""
    section = recipe.autoencoder
    try:
        kind = codec_kind(section.kind)
    except KeyError as error:
        raise ValueError(f"autoencoder.kind: {error.args[0]}") from None
    for name in section.options:
        try:
            codec_kind(name)
        except KeyError as error:
            raise ValueError(f"autoencoder.options.{name}: {error.args[0]}") from None
    if DEFAULT_KIND in section.options:
        raise ValueError(
            f"autoencoder.options.{DEFAULT_KIND}: the {DEFAULT_KIND} kind reads the section's own keys "
            "(latent_channels, widths, ...)"
        )
    return kind.from_recipe(section, item_shape, adapter)


class CodecModule(RecipeOptimization, L.LightningModule):
    """Trains the codec of `config`'s kind (a `ConvAutoencoder` for an `AutoencoderConfig`) on batches
    {"media": [B, C, *extent], ...} of the data stream."""

    def __init__(
        self,
        recipe: DictConfig,
        classes: Mapping[str, list[str]],
        adapter: ModalityAdapter,
        config: Any,
    ):
        super().__init__()
        self.save_hyperparameters(
            {"recipe": OmegaConf.to_container(recipe), "classes": dict(classes), "config": config.to_dict()}
        )
        self.recipe, self.classes, self.adapter, self.config = recipe, dict(classes), adapter, config
        self.kind = kind_of(config)
        self.model = self.kind.model(config)

    def _padded(self, media: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """media [B, C, *extent] as the codec takes it: the adapter's `codec_values`, zero-padded at the end
        of each axis to a multiple of the downsampling; for a video codec (one that folds time apart from
        space) the time axis of clips [B, C, T, H, W] is padded to `time_folding(config).padded_frames(T)`
        by repeating the last frame, as shorter clips are (a zero frame would be a cut to black)."""
        values = self.adapter.codec_values(media)
        extent = tuple(values.shape[2:])
        factor = self.config.downsampling
        if getattr(self.config, "temporal_downsampling", None) is not None:
            values = time_folding(self.config).pad(values)
            padding = [p for n in reversed(extent[1:]) for p in (0, -n % factor)]
        else:
            padding = [p for n in reversed(extent) for p in (0, -n % factor)]
        return F.pad(values, padding), extent

    def reconstruct(self, media: Tensor, sample: bool = False, generator=None) -> tuple[Tensor, Any]:
        """media [B, C, *extent] -> (reconstruction of the same shape, as media: the adapter's
        `codec_media`, the posterior); the posterior's mean is decoded unless `sample`."""
        padded, extent = self._padded(media)
        posterior = self.model.encode(padded)
        z = posterior.sample(generator) if sample else posterior.mode()
        x_hat = self.adapter.codec_media(self.model.decode(z))
        return x_hat[(..., *(slice(0, n) for n in extent))], posterior

    def losses(self, media: Tensor, sample: bool, generator=None) -> dict[str, Tensor]:
        x_hat, posterior = self.reconstruct(media, sample, generator)
        kl = posterior.kl().mean() / math.prod(posterior.mean.shape[1:])
        reconstruction = self.adapter.reconstruction_loss(x_hat, media)
        return {
            "reconstruction": reconstruction,
            "kl": kl,
            "loss": reconstruction + self.recipe.autoencoder.kl_weight * kl,
        }

    def crops(self, media: Tensor, generator: torch.Generator) -> Tensor:
        """media [B, C, *extent] -> random crops [B, C, *crop] (one offset per axis for the batch), or the
        media itself without `autoencoder.crop`."""
        crop = self.recipe.autoencoder.crop
        if crop is None:
            return media
        extent = media.shape[2:]
        if len(crop) != len(extent) or any(c > n for c, n in zip(crop, extent, strict=True)):
            raise ValueError(f"autoencoder.crop {list(crop)} must fit the media's extent {list(extent)}")
        starts = [
            int(torch.randint(0, n - c + 1, (1,), generator=generator))
            for c, n in zip(crop, extent, strict=True)
        ]
        return media[(..., *(slice(s, s + c) for s, c in zip(starts, crop, strict=True)))]

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        generator = step_generator(self.recipe.seed, self.global_step)
        parts = self.losses(self.crops(batch["media"], generator), True, generator)
        if not torch.isfinite(parts["loss"]):
            raise FloatingPointError(
                f"codec loss is {parts['loss'].item()} at step {self.global_step}: lower optimizer.lr"
            )
        self.log("train/reconstruction", parts["reconstruction"])
        self.log("train/kl", parts["kl"])
        self.log("train/loss", parts["loss"], prog_bar=True)
        return parts["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        parts = self.losses(batch["media"], False)
        self.log("val/reconstruction", parts["reconstruction"], sync_dist=True)
        self.log("val/loss", parts["loss"], prog_bar=True, sync_dist=True)

    @torch.no_grad()
    def latent_statistics(self, dataset, items: int) -> tuple[float | list[float], float | list[float]]:
        """(shift, scale) of the posterior means of `items` items of `dataset`, by the kind's `statistics`
        (SD3's shift_factor / scaling_factor: diffusion sees (z - shift) * scale): one float of each, or
        one per latent channel."""
        was_training = self.training
        self.eval()
        # Spread over the dataset: its order may follow a label (notes: pitch by pitch).
        chosen = torch.linspace(0, len(dataset) - 1, min(items, len(dataset))).round().long().tolist()
        means = []
        for begin in range(0, len(chosen), 32):
            chunk = [dataset[i]["media"] for i in chosen[begin : begin + 32]]
            padded, _ = self._padded(torch.stack(chunk).to(self.device))
            means.append(self.model.encode(padded).mode().float().cpu())
        self.train(was_training)
        return self.kind.statistics(torch.cat(means))
