"""A run's checkpoints (Lightning's ModelCheckpoint): `checkpoints/last.ckpt`, every
`checkpoint.every_n_steps` optimizer steps and at the last step, always the newest; and the best held-out
loss so far. Files of the same name are replaced, never versioned (`last-v1.ckpt`): in a reused run
directory `last.ckpt` is this run's."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt` every `every_n_steps` steps and after the run's last step (`trainer.max_steps`). Saved at
    the end of the last training batch, not when training ends: by then the EMA callback has copied the
    averaged weights into the model, so such a checkpoint could not continue the raw weights."""

    def __init__(self, dirpath: Path, every_n_steps: int):
        if every_n_steps < 1:
            raise ValueError(f"checkpoint.every_n_steps must be at least 1, got {every_n_steps}")
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_steps,
            enable_version_counter=False,
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        last_step = trainer.global_step == trainer.max_steps
        if last_step and self._last_global_step_saved != trainer.global_step:
            if not self._should_skip_saving_checkpoint(trainer):
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def run_checkpoints(dirpath: Path, every_n_steps: int) -> list[ModelCheckpoint]:
    """The run's two checkpoint callbacks: `last.ckpt` (`LastCheckpoint`) and the best by `val/loss`."""
    best = ModelCheckpoint(dirpath=dirpath, monitor="val/loss", save_top_k=1, enable_version_counter=False)
    return [LastCheckpoint(dirpath, every_n_steps), best]
