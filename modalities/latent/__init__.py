"""Autoencoder latents: [C, H, W] tensors (already scaled by the autoencoder's factor) as p×p patch tokens,
unscaled, the stream DiT and SD3 checkpoints work in; they come and go as .safetensors files, as mmdit ships
no autoencoder to decode them."""

from modalities.latent.adapter import LatentAdapter, read_latent

__all__ = ["LatentAdapter", "read_latent"]
