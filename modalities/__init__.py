"""Modality adapters: each turns one kind of media into tokens for the shared diffusion core.
`GridAdapter` is the base of gridded media (series, images, volumes)."""

from mmdit.contract import DiscreteAdapter, ModalityAdapter
from modalities.common.gridded import GridAdapter
from modalities.registry import adapter_class, available, build_adapter, register

__all__ = [
    "DiscreteAdapter",
    "GridAdapter",
    "ModalityAdapter",
    "adapter_class",
    "available",
    "build_adapter",
    "register",
]
