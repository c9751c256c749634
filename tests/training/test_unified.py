"""The unified model: tasks, per-stream timesteps, the text loss, and fit -> sample --prompt -> describe
through the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from sklearn.datasets import load_digits

from mmdit.cli import main
from mmdit.recipe import from_yaml, load_recipe
from mmdit.training import build as run_builder
from mmdit.training.data import MediaDataModule
from mmdit.training.module import DiffusionModule, next_id_loss
from mmdit.training.tasks import Task, pick_task

TINY = [
    "model.width=32",
    "model.heads=2",
    "model.joint_depth=1",
    "model.single_depth=1",
    "data.batch_size=16",
    "optimizer.warmup_steps=2",
]


def build(*overrides: str) -> tuple[MediaDataModule, DiffusionModule]:
    return run_builder.build(load_recipe("unified-digits", [*TINY, *overrides]))


def task(module: DiffusionModule, name: str) -> Task:
    return next(t for t in module.tasks if t.name == name)


def test_text_loss_is_next_token_cross_entropy_over_real_targets():
    logits = torch.randn(2, 4, 7)
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    pairs = [(0, 0, 2), (0, 1, 3), (1, 0, 5)]  # (item, position, the next id it predicts)
    expected = torch.stack(
        [torch.nn.functional.cross_entropy(logits[b, i], torch.tensor(t)) for b, i, t in pairs]
    )
    torch.testing.assert_close(next_id_loss(logits, ids, mask), expected.mean())


def test_tasks_are_drawn_by_weight_and_alike_on_every_rank():
    _, module = build("tasks.draw.weight=3.0", "tasks.describe.weight=1.0")
    picks = [pick_task(module.tasks, module.recipe.seed, step).name for step in range(2000)]
    assert 0.70 < picks.count("draw") / len(picks) < 0.80
    again = [pick_task(module.tasks, module.recipe.seed, step).name for step in range(2000)]
    assert picks == again  # a function of the step alone


def test_clean_streams_sit_at_time_zero_and_pass_unchanged(monkeypatch):
    data, module = build()
    batch = next(iter(data.train_dataloader()))
    seen = {}

    def spy(streams, t, labels=None, **conditions):
        seen.update(streams=streams, t=t)
        return original(streams, t, labels, **conditions)

    original = module.model.forward
    monkeypatch.setattr(module.model, "forward", spy)
    losses = module.task_losses(batch, task(module, "describe"), drop=0.0)
    assert set(losses) == {"text"}
    clean = module.adapters["image"].encode(batch["media"]["image"])
    assert torch.equal(seen["streams"]["image"].x, clean.x) and (seen["t"]["image"] == 0).all()
    losses = module.task_losses(batch, task(module, "draw"), drop=0.0)
    assert set(losses) == {"diffusion"}
    assert (seen["t"]["text"] == 0).all() and (seen["t"]["image"] > 0).all()
    assert torch.equal(seen["streams"]["text"].x, batch["media"]["text"])  # the prompt is not noised
    assert not torch.equal(seen["streams"]["image"].x, clean.x)


def test_caption_dropout_empties_the_prompt():
    data, module = build()
    batch = next(iter(data.train_dataloader()))
    tokens = module.adapters["text"].encode(batch["media"]["text"])
    dropped = module._drop_prompt("text", tokens, 1.0, module.step_noise(torch.Generator().manual_seed(0)))
    assert (dropped.mask.sum(dim=1) == 2).all()  # BOS, EOS
    kept = module._drop_prompt("text", tokens, 0.0, module.step_noise(torch.Generator().manual_seed(0)))
    assert torch.equal(kept.x, tokens.x)


def test_recipe_errors_name_the_task_or_stream():
    with pytest.raises(KeyError, match="task 'draw': roles for unknown streams \\['audio'\\]"):
        build("tasks.draw.roles.audio=generate")
    with pytest.raises(ValueError, match="task 'describe' generates nothing"):
        build("tasks.describe.roles.text=condition")
    with pytest.raises(ValueError, match="task 'draw': unknown stream role 'decode' for 'text'"):
        build("tasks.draw.roles.text=decode")


def test_unified_fit_sample_from_prompt_and_describe_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    short = ["trainer.max_steps=6", "trainer.val_check_interval=3", "sample.steps=2", "sample.grid=10"]
    assert (
        main(["fit", "unified-digits", *TINY, *short, f"run_dir={run}", "trainer.enable_progress_bar=false"])
        == 0
    )
    report = json.loads((run / "eval.json").read_text())
    assert {"accuracy", "understanding_accuracy"} <= set(report["generated"])
    assert report["reference"]["understanding_accuracy"] == 1.0  # the held-out captions name their digit
    weights = run / "weights.safetensors"
    out = tmp_path / "drawn"
    assert main(["sample", str(weights), "--prompt", "a handwritten seven", "--n", "3", "--steps", "2",
                 "--out", str(out)]) == 0  # fmt: skip
    assert len(list(out.glob("image_a-handwritten-seven_0*.png"))) == 3
    digits = load_digits()
    files = []
    for i in (0, 7):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray((digits.images[i] / 16 * 255).astype(np.uint8)).save(path)
        files.append(str(path))
    capsys.readouterr()
    assert main(["describe", str(weights), *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == files
    assert main(["describe", str(weights), files[0], "--temperature", "1.0"]) == 0
    assert main(["sample", str(weights), "--prompt", "x" * 40, "--n", "1"]) == 2  # longer than max_length


def test_unified_notes_trains_both_tasks_on_audio():
    data, module = run_builder.build(load_recipe("unified-notes", [*TINY, "model.width=32"]))
    batch = next(iter(data.train_dataloader()))
    assert set(module.task_losses(batch, task(module, "play"), drop=0.1)) == {"diffusion"}
    assert set(module.task_losses(batch, task(module, "name"), drop=0.0)) == {"text"}
    prompts = module.prompts_for({"pitch": torch.tensor([6]), "timbre": torch.tensor([1])}, "heldout")
    assert prompts == ["a F#3 played by a pluck"]
    texts = module.describe(batch["media"]["audio"][:2])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_a_unified_recipe_trains_and_samples_with_the_gaussian_objective():
    """Roles work alike under either objective: a clean stream sits at model time 0 (DDPM's step 0 / 1000)."""
    data, module = build("objective.type=gaussian", "objective.learn_sigma=true", "sample.sampler=ddim")
    batch = next(iter(data.train_dataloader()))
    assert set(module.task_losses(batch, task(module, "draw"), drop=0.1)) == {"diffusion"}
    assert set(module.task_losses(batch, task(module, "describe"), drop=0.0)) == {"text"}
    module.training_step(batch, 0).backward()
    assert module.model.specs["image"].out_features == 2 * module.model.specs["image"].features
    images = module.generate(2, prompts=["a handwritten 3", "a handwritten 8"], steps=3)["image"]
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()


@pytest.mark.parametrize("pool", ["embedded", "joint"])
def test_the_clean_streams_of_any_task_get_a_pooling_mlp_when_the_recipe_pools(pool):
    _, module = build(f"model.pool={pool}")
    assert module.model.pool == pool
    assert list(module.model.input_pools) == ["image", "text"]  # understood by describe, caption of draw
    _, off = build()  # the default: attention only
    assert off.model.pool == "none" and not list(off.model.input_pools)
    data, _ = build()
    batch = next(iter(data.train_dataloader()))
    torch.manual_seed(0)
    for p in module.model.parameters():  # adaLN-Zero passes no gradient into the conditioning at first
        torch.nn.init.normal_(p, std=0.05)
    for name, pooled in (("draw", "text"), ("describe", "image")):  # each task trains its clean stream's MLP
        module.zero_grad()
        module.total(module.task_losses(batch, task(module, name), drop=0.1)).backward()
        grads = {s: module.model.input_pools[s].mlp[0].weight.grad for s in ("image", "text")}
        assert grads[pooled] is not None and grads[pooled].abs().sum() > 0
        other = grads["image" if pooled == "text" else "text"]
        assert other is None or not other.any()  # the generated stream is never pooled
    stored = OmegaConf.to_container(module.recipe)
    del stored["model"]["pool"]  # a recipe stored before model.pool existed: that model pooled nothing
    assert from_yaml(json.dumps(stored)).model.pool == "none"
