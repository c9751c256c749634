"""The contract between the core and a modality: what a stream is (`StreamSpec`), what it carries
(`Tokens`), and what an adapter must do (`ModalityAdapter`; `DiscreteAdapter` for categorical streams).

The core (model, objectives, training) speaks only these types. A modality implements an adapter and
registers it (`modalities.registry`); the run builder (`mmdit.training.build`) is the one place that
turns a recipe's `modality:` names into adapters and hands them to the training module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from torch import Tensor
from torch.utils.data import Dataset

from mmdit.model.tokens import Tokens

__all__ = ["DiscreteAdapter", "ModalityAdapter", "Positions", "StreamSpec", "Tokens"]

Positions = Literal["rope", "sincos", "none"]


@dataclass(frozen=True)
class StreamSpec:
    """How the backbone sees one stream.

    features:      F of the incoming tokens.
    out_features:  F of the prediction (default F; 2F for a learned variance).
    positions:     "rope" (rotary over `axes` axes), "sincos" (DiT's fixed 2D table of extent `grid`), or
                   "none" (an unordered set, as Point-E's points).
    axes:          A, the number of coordinates per token.
    grid:          extent of the sin-cos table per axis (tokens), for positions="sincos".
    vocab:         for a discrete stream (text): the id table's size. Ids are embedded, the prediction is
                   logits [B, N, vocab], and `features` is 1.
    """

    name: str
    features: int
    out_features: int | None = None
    positions: Positions = "rope"
    axes: int = 0
    grid: tuple[int, int] | None = None
    vocab: int | None = None

    def __post_init__(self) -> None:
        if self.vocab is not None and (self.features != 1 or self.out_features not in (None, self.vocab)):
            raise ValueError(
                f"stream {self.name!r}: a discrete stream has features=1 and vocab-sized outputs"
            )
        if self.positions not in ("rope", "sincos", "none"):
            raise ValueError(
                f"stream {self.name!r}: positions must be rope, sincos or none, got {self.positions!r}"
            )
        if self.positions == "rope" and not 1 <= self.axes <= 3:
            raise ValueError(f"stream {self.name!r}: rope needs 1 to 3 axes, got {self.axes}")
        if self.positions == "sincos" and (self.axes != 2 or self.grid is None):
            raise ValueError(f"stream {self.name!r}: sincos positions need axes=2 and a grid (h, w)")


class ModalityAdapter(ABC):
    """One kind of media (images, audio, meshes, ...) as a stream of tokens.

    Datasets an adapter returns yield items `{"media": Tensor, "labels": {name: int}}` and carry
    `classes: dict[str, list[str]]`, the class names of each label, so a model can be conditioned on them
    and a user can ask for a class by name. Items of variable-length media also carry `"numbers": {name:
    float}` (audio: `{"seconds": duration}`): the media is padded to a fixed size, and `encode` / `layout`
    read the numbers to mask the padding (a recipe may also condition the model on them). A dataset that
    knows its labels without reading its media may also define `item_labels(i) -> {name: int}` (the labels
    of item i), which a join (`mmdit.training.joined`) reads instead of loading every item.
    """

    name: ClassVar[str]
    """Registry name, used as `modality:` in recipes."""

    file_suffix: ClassVar[str]
    """Suffix of the files `save` writes (".png", ".wav", ...)."""

    channels: int | None = None
    """Where token features are patches laid out channel-fastest (images, latents): the channels per
    position, which `sample.guided_channels` needs; None otherwise."""

    @property
    def read_suffixes(self) -> tuple[str, ...]:
        """The file suffixes `load` reads (default: `file_suffix` alone): how the CLI tells which stream a
        user's file is for."""
        return (self.file_suffix,)

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
        """A skeleton (zeros, positions, mask) for sampling `batch_size` items; numbers {name: [B] float}
        give each item's extent where the adapter reads them. `spec` is the adapter's own keyword options
        (a gridded adapter's `size`), given as `generate(..., layout={stream: spec})` or from the command
        line as `mmdit sample W --layout size=16,16`; without them, the adapter's default size."""

    def encoding_identity(self) -> dict[str, Any]:
        """What `encode` depends on beyond the adapter's options, for caches of encoded tokens to key on
        (a codec file's digest: retraining the codec must not serve stale tokens); nothing by default."""
        return {}

    def default_numbers(self) -> dict[str, float]:
        """The numbers `generate` uses when none are given (audio: the clip length); none by default."""
        return {}

    @abstractmethod
    def load(self, path: str | Path) -> Tensor:
        """Read one item from a file; a file that cannot be read is an error naming it."""

    def item(self, path: str | Path) -> dict[str, Any]:
        """One file as an item the model reads, `{"media": Tensor, "numbers": {name: float}}`, for commands
        that hand a user's files to a model (`mmdit describe`): by default the file as `load` reads it. An
        adapter of a fixed extent refuses a file of another (naming it, the expected and the got shape);
        one of variable extent pads it and gives its extent in the numbers, as its datasets do."""
        return {"media": self.load(path), "numbers": {}}

    @abstractmethod
    def save(self, item: Tensor, path: str | Path) -> Path:
        """Write one item (as `decode` returns it, without the batch axis) to a file; returns the path."""

    @abstractmethod
    def preview(self, media: Tensor, path: str | Path, columns: int | None = None) -> Path:
        """A PNG a person can look at for a batch of items (a grid, spectrograms, renders), `columns` wide
        (default about square). Training previews ask item i for class i mod C of the first label and pass
        columns=C, so column j of every row shows class j."""

    @abstractmethod
    def dataset(self, source: str | Mapping[str, Any], split: str, seed: int = 0) -> Dataset:
        """A dataset by name (bundled, e.g. "digits") or `{"folder": PATH, "label": NAME}` for a user's
        own files (sub-folders name the classes of label NAME, default "class"). `split` is "train" or
        "heldout"; `seed` (the recipe's `data.split_seed`) draws the split and any generated data, so both
        splits of one seed never share an item."""

    def codec_values(self, media: Tensor) -> Tensor:
        """Media (a batch as `dataset` items collate) -> the values this adapter's codec tokenizer feeds a
        codec, so that a codec stage trains on what the tokenizer will encode: the media as they are by
        default (video: [0, 1] -> [-1, 1], the range of diffusers' video VAEs)."""
        return media

    def codec_media(self, values: Tensor) -> Tensor:
        """The inverse of `codec_values`, unclamped (a codec stage's loss needs its gradient everywhere)."""
        return values

    def reconstruction_loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """A codec stage's loss between reconstructed and real media (batches as `dataset` items collate):
        the mean absolute error by default; a modality adds what its judge hears or sees (audio: a
        multi-resolution STFT loss)."""
        return (prediction - target).abs().mean()

    @abstractmethod
    def evaluate(
        self, generated: Tensor, labels: Mapping[str, Tensor], train: Dataset, heldout: Dataset
    ) -> dict[str, dict[str, float]]:
        """Judge `generated` (media asked for with `labels`, [B] each) against real data. `mmdit eval`
        asks for the labels of the held-out items in turn, `eval.samples` of them (default: one per
        held-out item; more cycle through them again).

        Returns `{"generated": {metric: value}, "reference": {metric: value}}`, the reference row being the
        same metrics for real data, so a reader sees what a perfect generator would score."""


class DiscreteAdapter(ModalityAdapter):
    """A categorical stream (text bytes, codec tokens, MIDI events): items are ids [L] long, the backbone
    embeds them with the stream's own table and predicts next-id logits; `stream()` sets `vocab`.

    A discrete stream is generated id by id (`mmdit.training.module.DiffusionModule.describe`) and can
    condition media as a prompt; guidance samples against `empty(n)`, the prompt that condition dropout
    trains with. Captions tie it to labelled data: `caption` writes an item's labels as a value, and
    `captioned` pairs a dataset's items with such captions."""

    max_length: int
    """L, the ids per item (padded)."""

    end_id: ClassVar[int]
    """The id that ends an item: generation stops there."""

    never_written: ClassVar[tuple[int, ...]]
    """Ids generation never picks (padding, the start id)."""

    @abstractmethod
    def to_ids(self, value: str) -> Tensor:
        """A value (a string) -> ids [max_length] long; a value that does not fit is an error naming it."""

    @abstractmethod
    def from_ids(self, ids: Tensor) -> str:
        """Ids [L] -> the value they spell (what follows `end_id` is ignored)."""

    @abstractmethod
    def caption(
        self, labels: Mapping[str, int], classes: Mapping[str, list[str]], split: str, index: int
    ) -> str:
        """A caption of an item with these labels ({key: class index}; `classes` names them): the phrasing
        `index` of the split's templates (index mod count), so held-out phrasings are fixed."""

    @abstractmethod
    def captioned(self, dataset: Dataset, split: str, media_stream: str, own_stream: str) -> Dataset:
        """`dataset`'s items with a caption of their labels as this stream's media: items become
        {"media": {media_stream: ..., own_stream: ids [L]}, "labels": ...}."""

    @abstractmethod
    def named_classes(self, value: str, key: str, classes: Mapping[str, list[str]]) -> list[int]:
        """The classes of label `key` that a value names: how understanding is scored."""

    @abstractmethod
    def caption_keys(self) -> list[str]:
        """The label keys its captions name (in a `caption`, every one of them): what understanding is
        scored on."""

    def empty(self, n: int) -> Tensor:
        """[n, max_length] ids of the empty value: the unconditional prompt of guidance."""
        return self.to_ids("").expand(n, -1).clone()
