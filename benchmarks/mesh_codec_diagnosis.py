"""Where does a mesh codec fail? For a codec export over the bundled shapes' SDF grids: the whole-grid
reconstruction loss (the adapter's `reconstruction_loss`) on a spread of train grids and on the held-out
grids (equal: no overfitting; both far above the training loss: training saw something else, as crops with
GroupNorm), the L1 and the share of sign errors inside the truncation band, and the mesh judge's accuracy
per class with its confusion matrix, on the reconstructions and (`--real`) on the real grids themselves.

    python benchmarks/mesh_codec_diagnosis.py CODEC.safetensors [--resolution 64] [--real] [--png PAIRS.png]

`--png` renders two held-out shapes of each class, real and reconstructed side by side.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import Tensor

from mmdit.codecs.export import load_codec
from modalities.common.judges import ClassifierJudge
from modalities.mesh.adapter import MeshAdapter, _descriptors
from modalities.mesh.metrics import surface_points


def reconstruct(model: torch.nn.Module, grids: Tensor, batch: int = 16) -> Tensor:
    """grids [N, 1, R, R, R] -> the codec's decoding of each posterior mean, [N, 1, R, R, R]."""
    with torch.no_grad():
        return torch.cat(
            [model.decode(model.encode(grids[i : i + batch]).mode()) for i in range(0, len(grids), batch)]
        )


def judged(
    adapter: MeshAdapter, judge: ClassifierJudge, grids: Tensor, labels: np.ndarray, names: list[str]
) -> str:
    """Overall and per-class accuracy of the judge on grids [N, 1, R, R, R], and the confusion rows."""
    points = [surface_points(adapter.tokenizer.geometry(g.clamp(-1, 1)), seed=i) for i, g in enumerate(grids)]
    predicted = judge.predict(_descriptors(points))
    per_class = ", ".join(f"{n} {np.mean(predicted[labels == c] == c):.2f}" for c, n in enumerate(names))
    rows = "; ".join(
        f"{n}: {np.bincount(predicted[labels == c], minlength=len(names)).tolist()}"
        for c, n in enumerate(names)
    )
    accuracy = np.mean(predicted == labels)
    return f"accuracy {accuracy:.3f} ({per_class})\n  confusion (true: predicted counts) {rows}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("codec")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--truncation", type=float, default=3.0)
    parser.add_argument("--real", action="store_true", help="also judge the real held-out grids")
    parser.add_argument("--png", help="write real / reconstructed pairs here")
    args = parser.parse_args()

    adapter = MeshAdapter(resolution=args.resolution, truncation=args.truncation)
    train, heldout = adapter.dataset("shapes", "train"), adapter.dataset("shapes", "heldout")
    names, labels = train.classes["shape"], heldout.labels.numpy()
    judge = ClassifierJudge(adapter._reference(train, heldout)["train_descriptors"], train.labels.numpy())
    model = load_codec(args.codec).model.eval()
    if args.real:
        print("real held-out grids:", judged(adapter, judge, heldout.media, labels, names))
    spread = torch.linspace(0, len(train) - 1, len(heldout)).round().long()
    for split, grids in (("train", train.media[spread]), ("held-out", heldout.media)):
        start = time.perf_counter()
        rebuilt = reconstruct(model, grids)
        band = grids.abs() < 1  # the truncation band, where the surface is
        loss = adapter.reconstruction_loss(rebuilt, grids)
        l1 = (rebuilt - grids).abs()[band].mean()
        signs = ((rebuilt > 0) != (grids > 0))[band].float().mean()
        seconds = time.perf_counter() - start
        print(
            f"{split} ({len(grids)} grids, {seconds:.1f} s): whole-grid loss {loss:.4f}, band L1 {l1:.4f}, "
            f"band sign errors {signs:.4f}"
        )
    print("reconstructed held-out:", judged(adapter, judge, rebuilt, labels, names))
    if args.png:
        picks = [int(i) for c in range(len(names)) for i in np.flatnonzero(labels == c)[:2]]
        pairs = torch.stack([x for i in picks for x in (heldout.media[i], rebuilt[i].clamp(-1, 1))])
        print("pairs:", adapter.preview(pairs, args.png, columns=6))


if __name__ == "__main__":
    main()
