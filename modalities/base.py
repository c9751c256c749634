"""The contract between a kind of media and the diffusion core.

An adapter knows its media and nothing else: how to read and write files, how to turn a batch into `Tokens`
and back, how to lay out noise for a requested size, how to preview and how to judge generations. The core
calls these methods and never imports a modality.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor
from torch.utils.data import Dataset

from mmdit.model.backbone import StreamSpec
from mmdit.model.tokens import Tokens


class ModalityAdapter(ABC):
    """One kind of media (images, audio, meshes, ...) as a stream of tokens.

    Datasets an adapter returns yield items `{"media": Tensor, "labels": {name: int}}` and carry
    `classes: dict[str, list[str]]`, the class names of each label, so a model can be conditioned on them
    and a user can ask for a class by name. Items of variable-length media also carry `"numbers": {name:
    float}` (audio: `{"seconds": duration}`): the media is padded to a fixed size, and `encode` / `layout`
    read the numbers to mask the padding (a recipe may also condition the model on them).
    """

    name: ClassVar[str]
    """Registry name, used as `modality:` in recipes."""

    file_suffix: ClassVar[str]
    """Suffix of the files `save` writes (".png", ".wav", ...)."""

    @property
    def sample_suffixes(self) -> tuple[str, ...]:
        """The formats `mmdit sample` writes each sample in (default: `file_suffix` alone)."""
        return (self.file_suffix,)

    @abstractmethod
    def stream(self, name: str) -> StreamSpec:
        """How the backbone sees this stream: features per token, position scheme, axes."""

    @abstractmethod
    def encode(self, media: Tensor, numbers: Mapping[str, Tensor] | None = None) -> Tokens:
        """A collated batch of media -> tokens. Must be inverted exactly (or within a documented bound) by
        `decode`. numbers: the batch's {name: [B] float}; an adapter of variable-length media marks the
        tokens past each item's extent mask=False (no attention to them, no loss on them)."""

    @abstractmethod
    def decode(self, tokens: Tokens) -> Tensor:
        """Tokens -> a batch of media in the layout `encode` takes."""

    @abstractmethod
    def layout(self, batch_size: int, numbers: Mapping[str, Tensor] | None = None, **spec: Any) -> Tokens:
        """A skeleton (zeros, positions, mask) for sampling `batch_size` items of the requested size;
        numbers {name: [B] float} give each item's extent where the adapter reads them."""

    def default_numbers(self) -> dict[str, float]:
        """The numbers `generate` uses when none are given (audio: the clip length); none by default."""
        return {}

    @abstractmethod
    def load(self, path: str | Path) -> Tensor:
        """Read one item from a file; a file that cannot be read is an error naming it."""

    @abstractmethod
    def save(self, item: Tensor, path: str | Path) -> Path:
        """Write one item (as `decode` returns it, without the batch axis) to a file; returns the path."""

    @abstractmethod
    def preview(self, media: Tensor, path: str | Path) -> Path:
        """A PNG a person can look at for a batch of items (a grid, spectrograms, renders)."""

    @abstractmethod
    def dataset(self, source: str | Mapping[str, Any], split: str) -> Dataset:
        """A dataset by name (bundled, e.g. "digits") or `{"folder": path}` for a user's own files.
        `split` is "train" or "heldout"."""

    @abstractmethod
    def evaluate(
        self, generated: Tensor, labels: Mapping[str, Tensor], train: Dataset, heldout: Dataset
    ) -> dict[str, dict[str, float]]:
        """Judge `generated` (media asked for with `labels`, [B] each) against real data.

        Returns `{"generated": {metric: value}, "reference": {metric: value}}`, the reference row being the
        same metrics for real data, so a reader sees what a perfect generator would score."""
