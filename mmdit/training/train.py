"""`mmdit fit`: build the run from a recipe, train with Lightning, then export, evaluate and draw."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import DictConfig, OmegaConf

from mmdit.model.blocks import JointBlock, SingleBlock
from mmdit.recipe import to_yaml
from mmdit.training.build import build
from mmdit.training.callbacks import LossCurve, ReconstructionGrid, SampleGrid
from mmdit.training.codec_finish import finish_codec
from mmdit.training.divergence import LossDivergence
from mmdit.training.ema import EMA
from mmdit.training.evaluate import evaluate
from mmdit.training.export import export_weights
from mmdit.training.module import DiffusionModule
from mmdit.training.resume_check import check_resume


def run_directory(recipe: DictConfig) -> Path:
    """`run_dir`, or runs/<name>/<timestamp>. Lightning's DDP launcher starts ranks 1.. as new processes
    with LOCAL_RANK set and rank 0's environment, so they reuse rank 0's timestamp and every rank writes to
    one folder; rank 0 itself (LOCAL_RANK unset, or 0 after a first launch) takes a new one for each run."""
    if recipe.run_dir:
        return Path(recipe.run_dir)
    if os.environ.get("LOCAL_RANK", "0") == "0" or "MMDIT_RUN_STAMP" not in os.environ:
        os.environ["MMDIT_RUN_STAMP"] = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / recipe.name / os.environ["MMDIT_RUN_STAMP"]


def loggers(run_dir: Path) -> list[Logger]:
    """CSV always (metrics.csv in the run directory); TensorBoard too when it is installed."""
    found: list[Logger] = [CSVLogger(run_dir, name="", version="logs")]
    try:
        import tensorboard  # noqa: F401

        found.append(TensorBoardLogger(run_dir, name="", version="tensorboard"))
    except ImportError:
        pass
    return found


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
    """Train `recipe`; returns the run directory, which holds recipe.yaml, checkpoints/, logs/, samples/,
    samples.png, loss.png, weights.safetensors (EMA; codec.safetensors for a codec recipe) and eval.json."""
    L.seed_everything(recipe.seed, workers=True)
    datamodule, module = build(recipe)  # before the run directory: a recipe that cannot build leaves none
    if resume is not None:
        check_resume(resume, recipe, module)
    run_dir = run_directory(recipe)
    fresh = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(to_yaml(recipe))
    codec = recipe.autoencoder is not None
    grid = ReconstructionGrid if codec else SampleGrid
    callbacks = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", monitor="val/loss", save_top_k=1, save_last=True),
        grid(run_dir, recipe.sample.grid),
        LossCurve(run_dir),
        LossDivergence(),
    ]
    if recipe.ema.enabled:
        callbacks.append(EMA(recipe.ema.decay))
    trainer_args = trainer_arguments(recipe)
    if trainer_args.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        default_root_dir=run_dir, callbacks=callbacks, logger=loggers(run_dir), **trainer_args
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except (ValueError, KeyError, OSError):
        # A bad file met at first use: a new run that saved no checkpoint leaves no half-made directory.
        if fresh and trainer.is_global_zero and not any((run_dir / "checkpoints").glob("*.ckpt")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if trainer.is_global_zero:
        # Lightning's teardown has moved the module to the CPU; sampling for the eval is the slow part, so
        # bring it back to the device that trained.
        module = module.to(trainer.strategy.root_device)
        if codec:
            finish_codec(module, datamodule, run_dir)
        else:
            finish(module, run_dir)
    return run_dir


def finish(module: DiffusionModule, run_dir: Path) -> None:
    """After training (EMA weights now in the model): export, draw the final grid, evaluate."""
    export_weights(module, run_dir / "weights.safetensors")
    SampleGrid(run_dir, module.recipe.sample.grid).draw(module, "final")
    report = evaluate(module)
    (run_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
