"""`mmdit fit`: build the run from a recipe, train with Lightning, then export, evaluate and draw."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import DictConfig, OmegaConf

from mmdit.model.blocks import JointBlock, SingleBlock
from mmdit.recipe import to_yaml
from mmdit.training.build import build
from mmdit.training.callbacks import LossCurve, ReconstructionGrid, SampleGrid
from mmdit.training.checkpoints import run_checkpoints
from mmdit.training.codec_finish import finish_codec
from mmdit.training.codec_module import CodecModule
from mmdit.training.data import MediaDataModule
from mmdit.training.divergence import LossDivergence
from mmdit.training.ema import EMA
from mmdit.training.evaluate import evaluate
from mmdit.training.export import export_weights
from mmdit.training.module import DiffusionModule
from mmdit.training.resume import check_resume
from mmdit.training.run_logs import loggers


def run_directory(recipe: DictConfig) -> Path:
    """`run_dir`, or runs/<name>/<timestamp>. Lightning's DDP launcher starts ranks 1.. as new processes
    with LOCAL_RANK set and rank 0's environment, so they reuse rank 0's timestamp and every rank writes to
    one folder; rank 0 itself (LOCAL_RANK unset, or 0 after a first launch) takes a new one for each run."""
    if recipe.run_dir:
        return Path(recipe.run_dir)
    if os.environ.get("LOCAL_RANK", "0") == "0" or "MMDIT_RUN_STAMP" not in os.environ:
        os.environ["MMDIT_RUN_STAMP"] = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / recipe.name / os.environ["MMDIT_RUN_STAMP"]


def trainer_arguments(recipe: DictConfig) -> dict:
    """`recipe.trainer` for lightning.Trainer. `strategy: fsdp` becomes Lightning's FSDPStrategy wrapping each
    transformer block as one FSDP unit (the repeated unit, so every block's parameters are gathered just
    for its own forward and backward); EMA is refused there, as Lightning's WeightAveraging keeps a full
    copy of the model, which a sharded model does not have."""
    arguments = OmegaConf.to_container(recipe.trainer)
    if arguments.get("strategy") == "fsdp":
        if recipe.ema.enabled:
            raise ValueError(
                "trainer.strategy=fsdp shards the model, and Lightning's EMA (WeightAveraging) needs the "
                "whole model on every rank: set ema.enabled=false, or train with strategy=ddp"
            )
        arguments["strategy"] = FSDPStrategy(auto_wrap_policy={JointBlock, SingleBlock})
    return arguments


def fit(recipe: DictConfig, resume: str | None = None) -> Path:
    """Train `recipe` (`train`), then export, evaluate and draw; returns the run directory, which holds
    recipe.yaml, checkpoints/, logs/, samples/, samples.png, loss.png, weights.safetensors (EMA;
    codec.safetensors for a codec recipe) and eval.json."""
    trainer, datamodule, module, run_dir = train(recipe, resume)
    if trainer.is_global_zero:
        # Lightning's teardown has moved the module to the CPU; sampling for the eval is the slow part, so
        # bring it back to the device that trained.
        module = module.to(trainer.strategy.root_device)
        if recipe.autoencoder is not None:
            finish_codec(module, datamodule, run_dir)
        else:
            finish(module, run_dir)
    return run_dir


def train(
    recipe: DictConfig, resume: str | None = None, callbacks: Sequence[L.Callback] = ()
) -> tuple[L.Trainer, MediaDataModule, DiffusionModule | CodecModule, Path]:
    """The training of `fit`: from scratch, or continuing the checkpoint `resume` of the same recipe
    (`mmdit.training.resume`) exactly where it stopped: the same batches (`mmdit.training.train_order`),
    noise (`mmdit.training.step_noise`) and schedule, the metrics.csv of the run directory continued when
    `resume` is one of its checkpoints, and the loss curve redrawn whole. `callbacks` join the run's own
    (a caller's monitors). Returns the trainer, the data and training modules and the run directory."""
    resumed_step = check_resume(recipe, resume) if resume else None
    L.seed_everything(recipe.seed, workers=True)
    datamodule, module = build(recipe)  # before the run directory: a recipe that cannot build leaves none
    run_dir = run_directory(recipe)
    fresh = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(to_yaml(recipe))
    grid = ReconstructionGrid if recipe.autoencoder is not None else SampleGrid
    callbacks = [
        *callbacks,
        *run_checkpoints(run_dir / "checkpoints", recipe.checkpoint.every_n_steps),
        grid(run_dir, recipe.sample.grid),
        LossCurve(run_dir),
        LossDivergence(),
    ]
    if recipe.ema.enabled:
        callbacks.append(EMA(recipe.ema.decay))
    trainer_args = trainer_arguments(recipe)
    if trainer_args.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar())
    own_checkpoint = (
        resume is not None and Path(resume).resolve().parent == (run_dir / "checkpoints").resolve()
    )
    trainer = L.Trainer(
        default_root_dir=run_dir,
        callbacks=callbacks,
        logger=loggers(run_dir, resumed_step if own_checkpoint else None),
        **trainer_args,
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except (ValueError, KeyError, OSError):
        # A bad file met at first use: a new run that saved no checkpoint leaves no half-made directory.
        if fresh and trainer.is_global_zero and not any((run_dir / "checkpoints").glob("*.ckpt")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return trainer, datamodule, module, run_dir


def finish(module: DiffusionModule, run_dir: Path) -> None:
    """After training (EMA weights now in the model): export, draw the final grid, evaluate."""
    export_weights(module, run_dir / "weights.safetensors")
    SampleGrid(run_dir, module.recipe.sample.grid).draw(module, "final")
    report = evaluate(module)
    (run_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
