"""The DataModule: a modality's datasets (bundled or a user's folder) as Lightning dataloaders."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from mmdit.contract import DiscreteAdapter, ModalityAdapter
from mmdit.training.joined import JoinedDataset, matched_classes
from mmdit.training.train_order import EpochOrder, ResumableLoader, SeededItems


def data_stream(recipe: DictConfig) -> str:
    """The stream the dataset's media feed: `data.stream`, or the recipe's first stream."""
    stream = recipe.data.stream or next(iter(recipe.streams))
    if stream not in recipe.streams:
        raise KeyError(
            f"data.stream {stream!r} is not a stream of this recipe; streams: {list(recipe.streams)}"
        )
    return stream


def data_source(recipe: DictConfig, stream: str | None = None) -> str | dict:
    """The dataset a media stream reads (default: the data stream's), as the adapters take it: a dataset
    name, or a plain dict such as {"folder": PATH}. `data.source` feeds the data stream,
    `data.join.<stream>.source` a joined stream."""
    joined = stream is not None and stream in recipe.data.join
    source = recipe.data.join[stream].source if joined else recipe.data.source
    return OmegaConf.to_container(source) if isinstance(source, DictConfig) else source


def joined(recipe: DictConfig, adapters: Mapping[str, ModalityAdapter], base: Dataset, split: str) -> Dataset:
    """`base` (the data stream's `split`) joined with the items of every stream of `data.join`
    (`mmdit.training.joined`), in the recipe's order."""
    stream, dataset = data_stream(recipe), base
    for other, spec in recipe.data.join.items():
        if other not in adapters or other == stream or isinstance(adapters[other], DiscreteAdapter):
            raise KeyError(
                f"data.join.{other}: not a media stream of this recipe other than the data stream "
                f"{stream!r}; streams: {list(adapters)}"
            )
        items = adapters[other].dataset(data_source(recipe, other), split, recipe.data.split_seed)
        match = matched_classes(spec)
        dataset = JoinedDataset(
            dataset, stream, items, other, key=spec.key, to=spec.to, match=match, split=split
        )
    return dataset


def paired(
    recipe: DictConfig, adapters: Mapping[str, ModalityAdapter], dataset: Dataset, split: str
) -> Dataset:
    """The data stream's dataset (joined with `data.join`'s streams) with the other streams' media made from
    its items: in a recipe of several streams, each discrete stream captions each item's labels (items
    become {"media": {stream: ...}, "labels": ...})."""
    stream = data_stream(recipe)
    for name, adapter in adapters.items():
        if name == stream or name in recipe.data.join or not recipe.tasks:
            continue
        if not isinstance(adapter, DiscreteAdapter):
            raise ValueError(
                f"stream {name!r} ({recipe.streams[name].modality}) gets no data: in a unified recipe the "
                f"other streams are made from the data stream {stream!r} (captions of its labels, by a "
                f"discrete stream) or joined to it (data.join.{name})"
            )
        dataset = adapter.captioned(dataset, split, stream, name)
    return dataset


class MediaDataModule(L.LightningDataModule):
    """Train and held-out splits of `recipe.data.source`, read by the data stream's adapter.

    Batches are `{"media": Tensor [B, ...], "labels": {name: [B]}}`, plus `"numbers": {name: [B] float}`
    when the dataset's items carry numbers (an audio clip's duration). The datasets are opened at
    construction, since their class lists size the model's label tables."""

    def __init__(self, recipe: DictConfig, adapters: Mapping[str, ModalityAdapter]):
        super().__init__()
        source, adapter = data_source(recipe), adapters[data_stream(recipe)]
        self.batch_size, self.num_workers = recipe.data.batch_size, recipe.data.num_workers
        self.seed = recipe.seed
        seed = recipe.data.split_seed
        self.train, self.heldout = (
            paired(
                recipe, adapters, joined(recipe, adapters, adapter.dataset(source, split, seed), split), split
            )
            for split in ("train", "heldout")
        )
        if len(self.train) < self.batch_size:
            raise ValueError(
                f"data.batch_size {self.batch_size} is larger than the train split ({len(self.train)} items)"
            )

    @property
    def classes(self) -> dict[str, list[str]]:
        return dict(self.train.classes)

    def train_dataloader(self) -> ResumableLoader:
        """Shuffled batches through our own DistributedSampler (one replica in one process; Lightning keeps
        a sampler that already is one, and calls its `set_epoch` each epoch). It deals each epoch's
        permutation interleaved, so over W ranks with batch b, rank r's j-th item of a step is item
        r + W·j of the batch of W·b that one process gets: with `mmdit.training.step_noise`, DDP trains
        what one process over the same global batch trains. The loader is resumable and the items' own
        draws are seeded by (seed, epoch, index) (`mmdit.training.train_order`): a resumed run trains
        the batches of the uninterrupted one."""
        return self._shuffled(self.train)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.heldout)

    def _shuffled(self, dataset: Dataset) -> ResumableLoader:
        """Full batches of `dataset` in a new order each epoch, dealt across the ranks, resumable."""
        trainer = self.trainer
        sampler = EpochOrder(
            dataset,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            seed=self.seed,
        )
        return ResumableLoader(SeededItems(dataset, self.seed), sampler, **self._loader_options())

    def _loader(self, dataset: Dataset) -> DataLoader:
        """`dataset` in order, in batches (held-out data)."""
        return DataLoader(dataset, **self._loader_options())

    def _loader_options(self) -> dict:
        return dict(
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
