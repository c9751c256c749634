"""Packed vs padded training steps (forward + backward + AdamW).

    python benchmarks/packing.py [--steps 10] [--threads N] [--audio-notes]

A batch of 64 latent images of 8 sizes from 8×8 to 32×32 patches-worth of 2×2 tokens (16 to 256 tokens each)
runs through a DiT-S-sized backbone (12 single blocks, width 384) padded to the longest item, and packed into
rows of 256 tokens. Prints the padding share of each layout and the step times.

--audio-notes times the audio-notes recipe's own training step (`DiffusionModule.task_losses`, model and
batch size 64 as in the recipe) with `data.packing` off and on, on two batches of bundled notes: as the set
comes (every clip 1 s, so no padding), and the same clips cut to durations drawn uniformly in [0.25, 1] s
(padding the way a folder of sounds of several lengths makes it)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from regression_target import target
from torch import Tensor

from mmdit.contract import StreamSpec
from mmdit.model.backbone import MMDiT
from mmdit.model.packing import pack, padding_share, unpack
from mmdit.model.presets import preset
from mmdit.model.tokens import Tokens
from mmdit.recipe import load_recipe
from mmdit.training.build import build_adapters
from mmdit.training.module import DiffusionModule
from modalities.audio.datasets import NotesDataset
from modalities.common.grids import grid_positions

SIDES = [4, 6, 8, 10, 12, 14, 16, 16]  # tokens per side of each size (8 sizes, 8 items each)


def mixed_batch(items_per_size: int) -> Tokens:
    longest = max(SIDES) ** 2
    count = items_per_size * len(SIDES)
    x, pos = torch.randn(count, longest, 16), torch.zeros(count, longest, 2)
    mask = torch.zeros(count, longest, dtype=torch.bool)
    for i in range(count):
        side = SIDES[i % len(SIDES)]
        pos[i, : side * side] = grid_positions(side, side, 1)[0]
        mask[i, : side * side] = True
    return Tokens(x * mask[..., None], pos, mask)


def timed_steps(model: torch.nn.Module, loss: Callable[[int], Tensor], steps: int) -> float:
    """Seconds per step of loss(step).backward() and AdamW, after 2 warm-up steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        loss(step).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def notes_batch(count: int, varied: bool) -> dict:
    """`count` bundled notes as a training batch; `varied`: cut to durations in [0.25, 1] s."""
    data = NotesDataset("train")
    picked = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:count].tolist()
    media = torch.stack([data[i]["media"] for i in picked])
    labels = {k: torch.tensor([data[i]["labels"][k] for i in picked]) for k in data.classes}
    seconds = torch.ones(count)
    if varied:
        seconds = 0.25 + 0.75 * torch.rand(count, generator=torch.Generator().manual_seed(1))
        media = media * (torch.arange(media.shape[-1]) < seconds[:, None] * data.SAMPLE_RATE)[:, None]
    return {"media": media, "labels": labels, "numbers": {"seconds": seconds}}


def audio_notes(steps: int) -> None:
    print(f"{torch.get_num_threads()} threads, the audio-notes recipe's model and training step, batch 64")
    for varied in (False, True):
        batch = notes_batch(64, varied)
        for packing in (False, True):
            torch.manual_seed(0)
            recipe = load_recipe("audio-notes", [f"data.packing={str(packing).lower()}"])
            module = DiffusionModule(recipe, NotesDataset.classes, build_adapters(recipe))
            tokens = module.adapters["audio"].encode(batch["media"], batch["numbers"])
            if packing:
                tokens = pack(tokens, capacity=tokens.length).tokens

            def loss(step: int, module=module, batch=batch) -> Tensor:
                generator = torch.Generator().manual_seed(step)
                return module.task_losses(batch, module.tasks[0], 0.1, generator)["diffusion"]

            seconds = timed_steps(module, loss, steps)
            name = "durations 0.25-1 s" if varied else "notes as bundled"
            print(
                f"{name}, packing {str(packing):5}: {tokens.batch_size:2d} rows x {tokens.length} tokens, "
                f"padding {padding_share(tokens.mask):5.1%}, {seconds * 1000:7.1f} ms/step"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--audio-notes", action="store_true", help="time the audio-notes training step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.audio_notes:
        audio_notes(args.steps)
        return
    torch.manual_seed(0)
    sizes = preset("DiT-S/2")
    sizes.pop("patch_size")
    model = MMDiT([StreamSpec("image", 16, axes=2)], labels={"class": 1000}, **sizes)
    batch = mixed_batch(8)
    t, labels = torch.rand(batch.batch_size), {"class": torch.randint(0, 1000, (batch.batch_size,))}
    packed = pack(batch, capacity=max(SIDES) ** 2)
    real = batch.mask[..., None]

    def padded_step(step: int) -> Tensor:
        out = model({"image": batch}, t, labels)["image"]
        return ((out - target(out)) * real).square().mean()

    def packed_step(step: int) -> Tensor:
        out = model({"image": packed.tokens}, t, labels, items=packed.items)["image"]
        out = unpack(out, packed, batch)
        return ((out - target(out)) * real).square().mean()

    print(f"{torch.get_num_threads()} threads, {batch.batch_size} items of {len(set(SIDES))} sizes")
    for name, tokens, run in (("padded", batch, padded_step), ("packed", packed.tokens, packed_step)):
        seconds = timed_steps(model, run, args.steps)
        print(
            f"{name}: {tokens.batch_size:3d} rows x {tokens.length} tokens, "
            f"padding {padding_share(tokens.mask):5.1%}, {seconds * 1000:8.1f} ms/step"
        )


if __name__ == "__main__":
    main()
