"""Encoded tokens on disk: `mmdit prepare RECIPE` runs the data stream adapter's `encode` once over the train
and held-out splits and stores the Tokens (x, pos, mask) with each item's labels and numbers as safetensors
shards; a recipe with `data.cache: true` then trains on them instead of encoding every batch again (the
pre-extracted features of fast-DiT).

The trade-off: an encoding made once is frozen. Anything random at encode time (a random crop, an
augmentation, a latent sampled from an autoencoder's posterior) is drawn once and every epoch sees the same
tokens. Items keep their masks, so padding (a short clip's silent tail) stays masked exactly as encoded.

Layout: `$MMDIT_CACHE/tokens/<recipe name>-<split>-<key>/` (see `mmdit.cache`) holds `manifest.json`
(format, key, counts, shapes, dtypes, classes, creation time) and `shard-00000.safetensors`, ... of at most
SHARD_BYTES each, with tensors "x" [n, N, F], "pos" [n, N, A], "mask" [n, N], "labels.<key>" [n] and
"numbers.<name>" [n] (float64, as a batch collates them). The key hashes what changes the encoding: the
format version, the data stream's modality and its options (defaults filled in), `data.source`, the split,
and the split's length and classes. File contents are not hashed: after editing files of a folder source
in place (same count, same classes), delete the cache folder and prepare again. Shards are read into memory
whole.
"""

from __future__ import annotations

import inspect
import json
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.progress import Progress
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from mmdit.cache import cache_dir, cache_key
from mmdit.contract import ModalityAdapter
from mmdit.model.tokens import Tokens
from mmdit.training.data import MediaDataModule, data_source, data_stream

FORMAT_VERSION = 1  # bump when what a shard holds changes, so old caches are misses
SHARD_BYTES = 256 * 2**20
MANIFEST = "manifest.json"
TOKEN_FIELDS = ("x", "pos", "mask")


class CacheMiss(FileNotFoundError):
    """A `data.cache: true` recipe whose tokens are not cached for its current settings. `reason` says what
    was looked for; the message ends with the command that writes the cache."""

    def __init__(self, reason: str, command: str):
        self.reason = reason
        super().__init__(f"{reason}; run `{command}` first")


def check_cacheable(recipe: DictConfig) -> None:
    """Unified recipes are refused: their text stream's captions are drawn per item at load time."""
    if recipe.tasks:
        raise ValueError(
            f"recipe {recipe.name!r} is unified (it lists tasks): encoded tokens are cached only for "
            "single-data-stream recipes; set data.cache=false"
        )


def token_key(recipe: DictConfig, adapter: ModalityAdapter, dataset: Dataset, split: str) -> str:
    """The hash of what `split`'s encoding depends on (see the module docstring)."""
    spec = recipe.streams[data_stream(recipe)]
    options = inspect.signature(type(adapter)).bind(**OmegaConf.to_container(spec.options))
    options.apply_defaults()
    settings = dict(options.arguments)
    return cache_key(
        FORMAT_VERSION,
        spec.modality,
        settings,
        adapter.encoding_identity(),
        data_source(recipe),
        split,
        len(dataset),
        dict(dataset.classes),
    )


def token_folder(recipe: DictConfig, split: str, key: str) -> Path:
    return cache_dir() / "tokens" / f"{recipe.name}-{split}-{key}"


def _columns(tokens: Tokens, batch: Mapping[str, Any]) -> dict[str, Tensor]:
    """One encoded batch as the flat tensors a shard stores (all [B, ...])."""
    columns = {"x": tokens.x, "pos": tokens.pos, "mask": tokens.mask}
    columns.update({f"labels.{k}": v for k, v in batch["labels"].items()})
    columns.update({f"numbers.{k}": v for k, v in batch.get("numbers", {}).items()})
    return {k: v.detach().cpu().contiguous() for k, v in columns.items()}


def write_tokens(recipe: DictConfig, adapter: ModalityAdapter, dataset: Dataset, split: str) -> Path:
    """Encode `dataset` (the `split` of the recipe's data) in batches of `data.batch_size` on the CPU and
    write its cache folder; a folder already complete for these settings is kept as it is. The folder is
    written under a temporary name and renamed when complete, so an interrupted run leaves no cache."""
    key = token_key(recipe, adapter, dataset, split)
    folder = token_folder(recipe, split, key)
    if (folder / MANIFEST).is_file():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    loader = DataLoader(dataset, batch_size=recipe.data.batch_size, num_workers=recipe.data.num_workers)
    shards: list[dict[str, Any]] = []
    pending: list[dict[str, Tensor]] = []
    first: dict[str, Tensor] = {}  # the first batch: its size in bytes sets the items per shard

    def flush(columns: dict[str, Tensor]) -> None:
        name = f"shard-{len(shards):05d}.safetensors"
        save_file(columns, partial / name)
        shards.append({"file": name, "items": len(columns["x"])})

    with Progress(transient=True) as progress:
        for batch in progress.track(loader, description=f"encoding {recipe.name} {split}"):
            columns = _columns(adapter.encode(batch["media"], batch.get("numbers", {})), batch)
            if not first:
                first = columns
                per_shard = max(
                    1, int(SHARD_BYTES * len(first["x"]) // sum(v.nbytes for v in first.values()))
                )
            pending.append(columns)
            while pending and sum(len(c["x"]) for c in pending) >= per_shard:
                joined = {k: torch.cat([c[k] for c in pending]) for k in pending[0]}
                flush({k: v[:per_shard].contiguous() for k, v in joined.items()})
                rest = {k: v[per_shard:] for k, v in joined.items()}
                pending = [rest] if len(rest["x"]) else []
    if pending:
        flush({k: torch.cat([c[k] for c in pending]) for k in pending[0]})
    manifest = {
        "format": FORMAT_VERSION,
        "key": key,
        "recipe": recipe.name,
        "split": split,
        "modality": recipe.streams[data_stream(recipe)].modality,
        "items": sum(s["items"] for s in shards),
        "shards": shards,
        "shapes": {k: list(v.shape[1:]) for k, v in first.items()},
        "dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in first.items()},
        "classes": dict(dataset.classes),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    partial.rename(folder)
    return folder


class CachedTokens(Dataset):
    """A split's cached encodings in memory. Items are `{"tokens": {"x": [N, F], "pos": [N, A], "mask": [N]},
    "labels": {key: int64}}` plus `"numbers": {name: float64}` when the data has numbers; a batch of them
    gives `Tokens(**batch["tokens"])`. Carries `classes` like the dataset it was encoded from."""

    def __init__(self, columns: Mapping[str, Tensor], classes: Mapping[str, list[str]]):
        self.columns, self.classes = dict(columns), dict(classes)
        self.labels = [k.split(".", 1)[1] for k in columns if k.startswith("labels.")]
        self.numbers = [k.split(".", 1)[1] for k in columns if k.startswith("numbers.")]

    def __len__(self) -> int:
        return len(self.columns["x"])

    def __getitem__(self, i: int) -> dict:
        item = {
            "tokens": {k: self.columns[k][i] for k in TOKEN_FIELDS},
            "labels": {k: self.columns[f"labels.{k}"][i] for k in self.labels},
        }
        if self.numbers:
            item["numbers"] = {k: self.columns[f"numbers.{k}"][i] for k in self.numbers}
        return item


def prepare_tokens(recipe: DictConfig, adapters: Mapping[str, ModalityAdapter]) -> dict[str, Path]:
    """`mmdit prepare`: encode both splits of the recipe's data (where not cached yet); {split: folder}."""
    check_cacheable(recipe)
    adapter = adapters[data_stream(recipe)]
    data = MediaDataModule(recipe, adapters)
    return {
        split: write_tokens(recipe, adapter, d, split)
        for split, d in (("train", data.train), ("heldout", data.heldout))
    }


def read_tokens(recipe: DictConfig, adapter: ModalityAdapter, dataset: Dataset, split: str) -> CachedTokens:
    """The cached encoding of `dataset` (the recipe's `split`), or CacheMiss when `mmdit prepare` has not
    written it for the recipe's current settings."""
    folder = token_folder(recipe, split, token_key(recipe, adapter, dataset, split))
    command = f"mmdit prepare {recipe.name} [this run's overrides]"
    if not (folder / MANIFEST).is_file():
        reason = (
            f"data.cache is true but no {split} tokens are cached for these settings ({folder} is missing)"
        )
        others = [p.name for p in folder.parent.glob(f"{recipe.name}-{split}-*") if p.suffix != ".partial"]
        if others:
            reason += (
                f"; the cache holds {recipe.name} {split} tokens for other settings "
                f"({', '.join(sorted(others))}): the data stream's options, data.source or the dataset "
                "changed since they were prepared"
            )
        raise CacheMiss(reason, command)
    manifest = json.loads((folder / MANIFEST).read_text())
    shards = [load_file(folder / shard["file"]) for shard in manifest["shards"]]
    columns = {k: torch.cat([shard[k] for shard in shards]) for k in shards[0]}
    if len(columns["x"]) != manifest["items"] or manifest["items"] != len(dataset):
        raise ValueError(
            f"{folder}: its shards hold {len(columns['x'])} items, its manifest says {manifest['items']} and "
            f"the {split} split has {len(dataset)}; delete the folder and run `{command}` again"
        )
    return CachedTokens(columns, dataset.classes)


class CachedDataModule(MediaDataModule):
    """The MediaDataModule of a `data.cache: true` recipe: it serves the splits' cached encodings (batches
    `{"tokens": {"x", "pos", "mask"}, "labels": ..., "numbers": ...}`, which `DiffusionModule.task_losses`
    takes instead of encoding media). The media datasets are still opened, as their lengths and classes key
    the cache and their classes size the model."""

    def __init__(self, recipe: DictConfig, adapters: Mapping[str, ModalityAdapter]):
        check_cacheable(recipe)
        super().__init__(recipe, adapters)
        adapter = adapters[data_stream(recipe)]
        self.train = read_tokens(recipe, adapter, self.train, "train")
        self.heldout = read_tokens(recipe, adapter, self.heldout, "heldout")
