"""Packed vs padded training steps on a batch of mixed-size images (forward + backward + AdamW).

    python benchmarks/packing.py [--steps 10] [--threads N]

A batch of 64 latent images of 8 sizes from 8×8 to 32×32 patches-worth of 2×2 tokens (16 to 256 tokens each)
runs through a DiT-S-sized backbone (12 single blocks, width 384) padded to the longest item, and packed into
rows of 256 tokens. Prints the padding share of each layout and the step times."""

from __future__ import annotations

import argparse
import time

import torch

from mmdit.backbone import MMDiT, StreamSpec
from mmdit.packing import pack, padding_share, unpack
from mmdit.presets import preset
from mmdit.tokens import Tokens
from modalities.image import grid_positions

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


def timed_steps(model: MMDiT, run, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        run().square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = preset("DiT-S/2")
    sizes.pop("patch_size")
    model = MMDiT([StreamSpec("image", 16, axes=2)], labels={"class": 1000}, **sizes)
    batch = mixed_batch(8)
    t, labels = torch.rand(batch.batch_size), {"class": torch.randint(0, 1000, (batch.batch_size,))}
    packed = pack(batch, capacity=max(SIDES) ** 2)
    real = batch.mask[..., None]

    def padded_step():
        return model({"image": batch}, t, labels)["image"] * real

    def packed_step():
        return (
            unpack(model({"image": packed.tokens}, t, labels, items=packed.items)["image"], packed, batch)
            * real
        )

    print(f"{torch.get_num_threads()} threads, {batch.batch_size} items of {len(set(SIDES))} sizes")
    for name, tokens, run in (("padded", batch, padded_step), ("packed", packed.tokens, packed_step)):
        seconds = timed_steps(model, run, args.steps)
        print(
            f"{name}: {tokens.batch_size:3d} rows x {tokens.length} tokens, "
            f"padding {padding_share(tokens.mask):5.1%}, {seconds * 1000:8.1f} ms/step"
        )


if __name__ == "__main__":
    main()
