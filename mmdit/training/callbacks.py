"""What a person looks at during a run: a fixed-seed grid of samples and the loss curve, both PNG files in
the run directory, redrawn at each validation."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import matplotlib
import torch
from lightning.pytorch.utilities import rank_zero_warn

from mmdit.objectives.finite import NonFiniteSample

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def preview_labels(module, n: int) -> dict[str, torch.Tensor]:
    """Labels for a preview grid: item i asks for class i mod C of each label key, so each row of a
    C-wide grid reads 0, 1, ..., C-1."""
    return {k: torch.arange(n) % len(module.classes[k]) for k in module.preview_label_keys()}


def preview_columns(module, n: int) -> int | None:
    """The width of an n-item grid whose column j asks for class j of the first label key (None:
    unlabelled, the adapter's default)."""
    keys = module.preview_label_keys()
    return min(n, len(module.classes[keys[0]])) if keys else None


class SampleGrid(L.Callback):
    """At each validation, draw `n` samples from fixed noise and save `samples/step_NNNNNN.png` (and
    `samples.png`, the latest). Runs inside validation, so with EMA on it draws with the EMA weights."""

    def __init__(self, run_dir: Path, n: int):
        self.run_dir, self.n = Path(run_dir), n

    def draw(self, module, name: str) -> None:
        labels = preview_labels(module, self.n)
        media = module.generate(self.n, labels, seed=0)
        (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
        for stream, items in media.items():
            suffix = f"_{stream}" if len(media) > 1 else ""
            out = module.adapters[stream].preview(
                items.cpu(), self.run_dir / "samples" / f"{name}{suffix}.png", preview_columns(module, self.n)
            )
            (self.run_dir / f"samples{suffix}.png").write_bytes(out.read_bytes())

    def on_validation_epoch_end(self, trainer: L.Trainer, module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        try:
            self.draw(module, f"step_{trainer.global_step:06d}")
        except NonFiniteSample as err:  # a preview is no reason to stop the run; the final draw still fails
            rank_zero_warn(f"no preview at step {trainer.global_step}: {err}")


class ReconstructionGrid(L.Callback):
    """A codec stage's preview: at each validation, `pairs` held-out items spread over the split and their
    reconstructions side by side (real, reconstructed, real, ... with four pairs a row) in
    `samples/step_NNNNNN.png` and `samples.png`."""

    def __init__(self, run_dir: Path, pairs: int):
        self.run_dir, self.pairs = Path(run_dir), pairs

    def draw(self, module, heldout, name: str) -> None:
        chosen = torch.linspace(0, len(heldout) - 1, min(self.pairs, len(heldout))).long()  # spread out
        items = [heldout[int(i)] for i in chosen]
        real = torch.stack([item["media"] for item in items]).to(module.device)
        with torch.no_grad():
            reconstructed, _ = module.reconstruct(real)
        both = torch.stack([real, reconstructed.to(real.dtype)], dim=1).flatten(0, 1).cpu()
        (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
        out = module.adapter.preview(both, self.run_dir / "samples" / f"{name}.png", min(8, len(both)))
        (self.run_dir / "samples.png").write_bytes(out.read_bytes())

    def on_validation_epoch_end(self, trainer: L.Trainer, module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self.draw(module, trainer.datamodule.heldout, f"step_{trainer.global_step:06d}")


class LossCurve(L.Callback):
    """Keeps the training loss of every step and the validation loss of every validation, and plots both
    to `loss.png` (log scale) at each validation and at the end. The history is part of the checkpoint, so
    a resumed run draws the whole run's curve."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "loss.png"
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []

    def state_dict(self) -> dict[str, torch.Tensor]:
        """{"train", "val"}: float64 [n, 2] tensors of (step, loss) rows."""
        train = torch.tensor(self.train, dtype=torch.float64).reshape(-1, 2)
        return {"train": train, "val": torch.tensor(self.val, dtype=torch.float64).reshape(-1, 2)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.train = [(int(step), loss) for step, loss in state["train"].tolist()]
        self.val = [(int(step), loss) for step, loss in state["val"].tolist()]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.train.append((trainer.global_step, float(outputs["loss"])))

    def on_validation_epoch_end(self, trainer, module) -> None:
        if trainer.sanity_checking:
            return
        if "val/loss" in trainer.callback_metrics:
            self.val.append((trainer.global_step, float(trainer.callback_metrics["val/loss"])))
        self.plot()

    def on_train_end(self, trainer, module) -> None:
        self.plot()

    def plot(self) -> None:
        if not self.train:
            return
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        steps, losses = zip(*self.train, strict=True)
        ax.plot(steps, losses, lw=0.6, alpha=0.35, color="tab:blue", label="train (per step)")
        window = max(1, len(losses) // 50)
        smooth = torch.tensor(losses).unfold(0, window, 1).mean(1) if len(losses) >= window else None
        if smooth is not None:
            ax.plot(steps[window - 1 :], smooth.tolist(), color="tab:blue", label=f"train (mean of {window})")
        if self.val:
            ax.plot(*zip(*self.val, strict=True), "o-", color="tab:orange", label="held-out")
        ax.set(xlabel="optimizer step", ylabel="training loss", yscale="log")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.path)
        plt.close(fig)
