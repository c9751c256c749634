"""The DataModule: a modality's datasets (bundled or a user's folder) as Lightning dataloaders."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from modalities.base import ModalityAdapter


def data_stream(recipe: DictConfig) -> str:
    """The stream the dataset's media feed: `data.stream`, or the recipe's first stream."""
    stream = recipe.data.stream or next(iter(recipe.streams))
    if stream not in recipe.streams:
        raise KeyError(
            f"data.stream {stream!r} is not a stream of this recipe; streams: {list(recipe.streams)}"
        )
    return stream


def data_source(recipe: DictConfig) -> str | dict:
    """`data.source` as the adapters take it: a dataset name, or a plain dict such as {"folder": PATH}."""
    source = recipe.data.source
    return OmegaConf.to_container(source) if isinstance(source, DictConfig) else source


class MediaDataModule(L.LightningDataModule):
    """Train and held-out splits of `recipe.data.source`, read by the data stream's adapter.

    Batches are `{"media": Tensor [B, ...], "labels": {name: [B]}}`, plus `"numbers": {name: [B] float}`
    when the dataset's items carry numbers (an audio clip's duration). The datasets are opened at
    construction, since their class lists size the model's label tables."""

    def __init__(self, recipe: DictConfig, adapter: ModalityAdapter):
        super().__init__()
        source = data_source(recipe)
        self.batch_size, self.num_workers = recipe.data.batch_size, recipe.data.num_workers
        self.train = adapter.dataset(source, "train")
        self.heldout = adapter.dataset(source, "heldout")
        if len(self.train) < self.batch_size:
            raise ValueError(
                f"data.batch_size {self.batch_size} is larger than the train split ({len(self.train)} items)"
            )

    @property
    def classes(self) -> dict[str, list[str]]:
        return dict(self.train.classes)

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.heldout, shuffle=False)
