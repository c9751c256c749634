"""Training steps of the audio-notes recipe with `data.packing` off and on (loss, backward, AdamW).

    python benchmarks/packing_step.py [--steps 10] [--threads N]

Two batches of 64 bundled notes (batch size and model as in the recipe): as the set comes (every clip 1 s,
so no padding), and the same clips cut to durations drawn uniformly in [0.25, 1] s (padding the way a
folder of sounds of several lengths makes it). Prints each layout's rows, padding share and step time."""

from __future__ import annotations

import argparse
import time

import torch

from mmdit.module import DiffusionModule
from mmdit.packing import pack, padding_share
from mmdit.recipe import load_recipe
from modalities.audio_datasets import NotesDataset


def notes_batch(count: int, varied: bool) -> dict:
    data = NotesDataset("train")
    picked = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:count].tolist()
    media = torch.stack([data[i]["media"] for i in picked])
    labels = {k: torch.tensor([data[i]["labels"][k] for i in picked]) for k in data.classes}
    seconds = torch.ones(count)
    if varied:
        seconds = 0.25 + 0.75 * torch.rand(count, generator=torch.Generator().manual_seed(1))
        media = media * (torch.arange(media.shape[-1]) < seconds[:, None] * NotesDataset.SAMPLE_RATE)[:, None]
    return {"media": media, "labels": labels, "numbers": {"seconds": seconds}}


def seconds_per_step(module: DiffusionModule, batch: dict, steps: int) -> float:
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        module.diffusion_loss(batch, drop=0.1, generator=torch.Generator().manual_seed(step))[
            "audio"
        ].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} threads, audio-notes recipe model, batch 64")
    for varied in (False, True):
        batch = notes_batch(64, varied)
        for packing in (False, True):
            recipe = load_recipe("audio-notes", [f"data.packing={str(packing).lower()}"])
            torch.manual_seed(0)
            module = DiffusionModule(recipe, NotesDataset.classes)
            tokens = module.adapters["audio"].encode(batch["media"], batch["numbers"])
            if packing:
                tokens = pack(tokens, capacity=tokens.length).tokens
            seconds = seconds_per_step(module, batch, args.steps)
            name = "durations 0.25-1 s" if varied else "notes as bundled"
            print(
                f"{name}, packing {str(packing):5}: {tokens.batch_size:2d} rows x {tokens.length} tokens, "
                f"padding {padding_share(tokens.mask):5.1%}, {seconds * 1000:7.1f} ms/step"
            )


if __name__ == "__main__":
    main()
