"""The end of a codec stage: codec.safetensors (the EMA weights, the latent shift and scale measured on the
train split, the recipe), the final real-vs-reconstructed preview, and eval.json, the modality's own judge
on the reconstructions of the held-out split beside the real-data reference row."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress

from mmdit.codecs import save_codec, time_folding
from mmdit.recipe import to_yaml
from mmdit.training.callbacks import ReconstructionGrid
from mmdit.training.codec_module import CodecModule
from mmdit.training.data import data_stream

BATCH = 64  # held-out items reconstructed at once


def latent_extent(config: Any, extent: tuple[int, ...]) -> tuple[int, ...]:
    """The latent extent of media of `extent` as the codec stage pads them: every axis / downsampling,
    rounded up; the time axis of a video codec's clips by its `time_folding` (1 + k latent frames)."""
    spatial = tuple(-(-n // config.downsampling) for n in extent)
    if getattr(config, "temporal_downsampling", None) is None:
        return spatial
    return (time_folding(config).latent_frames(extent[0]), *spatial[1:])


def evaluate_codec(module: CodecModule, train, heldout, show_progress: bool = True) -> dict[str, Any]:
    """{"recipe", "reconstructed": {metric: value}, "reference": {metric: value}, "codec": {...}}: every
    held-out item encoded (posterior mean) and decoded, judged as generated media asked for with the item's
    own labels."""
    items = [heldout[i] for i in range(len(heldout))]
    keys = sorted({k for item in items for k in item["labels"]})
    labels = {k: torch.tensor([item["labels"][k] for item in items]) for k in keys}
    start, chunks = time.perf_counter(), []
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task(f"reconstructing {len(items)} held-out items", total=len(items))
        for begin in range(0, len(items), BATCH):
            media = torch.stack([item["media"] for item in items[begin : begin + BATCH]])
            with torch.no_grad():
                chunks.append(module.reconstruct(media.to(module.device))[0].float().cpu())
            progress.advance(task, len(media))
    seconds = time.perf_counter() - start
    report = module.adapter.evaluate(torch.cat(chunks), labels, train, heldout)
    item_shape = tuple(items[0]["media"].shape)
    latent = (module.config.latent_channels, *latent_extent(module.config, item_shape[1:]))
    return {
        "recipe": module.recipe.name,
        "reconstructed": report["generated"],
        "reference": report["reference"],
        "codec": {
            "item_shape": list(item_shape),
            "latent_shape": list(latent),
            "compression": round(math.prod(item_shape) / math.prod(latent), 2),
            "seconds": round(seconds, 2),
        },
    }


def finish_codec(module: CodecModule, datamodule, run_dir: Path) -> None:
    """After training (EMA weights now in the model): export, draw the final preview, evaluate."""
    module.eval()
    section = module.recipe.autoencoder
    shift, scale = module.latent_statistics(datamodule.train, section.statistics_items)
    modality = module.recipe.streams[data_stream(module.recipe)].modality
    extra = {"recipe": to_yaml(module.recipe), "modality": modality}
    save_codec(run_dir / "codec.safetensors", module.model, scale=scale, shift=shift, extra=extra)
    ReconstructionGrid(run_dir, module.recipe.sample.grid).draw(module, datamodule.heldout, "final")
    report = evaluate_codec(module, datamodule.train, datamodule.heldout)
    report["codec"].update(shift=shift, scale=scale)
    (run_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
