"""Modality adapters: each turns one kind of media into tokens for the shared diffusion core."""

from mmdit.contract import ModalityAdapter
from modalities.registry import adapter_class, available, build_adapter, register

__all__ = ["ModalityAdapter", "adapter_class", "available", "build_adapter", "register"]
