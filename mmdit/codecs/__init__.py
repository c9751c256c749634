"""Learned codecs: autoencoders whose latents the diffusion model learns."""

from mmdit.codecs.autoencoder import AutoencoderConfig, ConvAutoencoder, Posterior, Reconstruction
from mmdit.codecs.diffusers_codec import DiffusersAutoencoder, load_diffusers_codec
from mmdit.codecs.digest import codec_digest
from mmdit.codecs.export import load_codec, save_codec
from mmdit.codecs.frozen import FrozenCodec
from mmdit.codecs.kinds import CodecKind, codec_kind, register_codec_kind
from mmdit.codecs.loaded import CodecShape, LoadedCodec, TimeFolding, time_folding

__all__ = [
    "AutoencoderConfig",
    "CodecKind",
    "CodecShape",
    "ConvAutoencoder",
    "DiffusersAutoencoder",
    "FrozenCodec",
    "LoadedCodec",
    "Posterior",
    "Reconstruction",
    "TimeFolding",
    "codec_digest",
    "codec_kind",
    "load_codec",
    "load_diffusers_codec",
    "register_codec_kind",
    "save_codec",
    "time_folding",
]
