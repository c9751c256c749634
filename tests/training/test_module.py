"""The Lightning module on its own: training steps, precision, guidance and the errors a run can hit."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from mmdit.objectives.guidance import guided_prediction
from mmdit.recipe import load_recipe
from mmdit.training import build as run_builder
from mmdit.training.data import MediaDataModule
from mmdit.training.module import DiffusionModule
from mmdit.training.optim import LearningRateSchedule, optimizer_and_schedule

TINY = ["model.width=32", "model.heads=2", "model.single_depth=1", "data.batch_size=32"]


def build(*overrides: str) -> tuple[MediaDataModule, DiffusionModule]:
    return run_builder.build(load_recipe("image-digits", [*TINY, *overrides]))


def diffusion_loss(module: DiffusionModule, batch, drop: float, generator=None) -> torch.Tensor:
    """The loss of the recipe's one task (generate the image)."""
    return module.task_losses(batch, module.tasks[0], drop, generator)["diffusion"]


def trainer(steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **kwargs,
    )


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_training_lowers_the_loss(precision):
    torch.manual_seed(0)
    data, module = build("optimizer.lr=3e-3", "optimizer.warmup_steps=5")
    batch = next(iter(data.train_dataloader()))
    generator = torch.Generator().manual_seed(0)
    before = diffusion_loss(module, batch, 0.0, generator).item()
    trainer(60, precision=precision).fit(module, datamodule=data)
    generator = torch.Generator().manual_seed(0)
    after = diffusion_loss(module, batch, 0.0, generator).item()
    assert after < 0.8 * before


class GradientNorms(L.Callback):
    """Records the global gradient norm the optimizer stepped on (gradients stay until the next step)."""

    def __init__(self):
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, module, *args) -> None:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        self.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_the_fused_adamw_steps_on_clipped_gradients(precision):
    norms = {}
    for clip in (None, 1e-3):
        torch.manual_seed(0)
        data, module = build("optimizer.warmup_steps=0")
        recorder = GradientNorms()
        run = trainer(3, precision=precision, gradient_clip_val=clip, callbacks=[recorder])
        run.fit(module, datamodule=data)
        assert run.optimizers[0].defaults["fused"]
        norms[clip] = recorder.norms
    assert min(norms[None]) > 1e-2
    assert max(norms[1e-3]) == pytest.approx(1e-3, rel=1e-3)


def test_with_a_loss_scaler_the_adamw_is_not_fused_so_lightning_can_clip():
    data, module = build("optimizer.warmup_steps=0")
    # 16-mixed as on a GPU (Lightning turns precision="16-mixed" into bf16 on the CPU).
    scaled = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))
    run = trainer(2, plugins=[scaled], gradient_clip_val=1.0)
    run.fit(module, datamodule=data)
    assert not run.optimizers[0].defaults["fused"]


def test_the_foreach_adamw_is_a_recipe_key_away():
    _, module = build("optimizer.fused=false", "optimizer.warmup_steps=0")
    optimizer, _ = optimizer_and_schedule(module.parameters(), module.recipe.optimizer, 10)
    assert not optimizer.defaults["fused"]


def test_label_dropout_uses_the_null_class():
    _, module = build()
    batch = {"labels": {"digit": torch.arange(10).repeat(100)}}
    labels = module._labels(batch, drop=0.3, draws=module.step_noise())["digit"]
    dropped = (labels == 10).float().mean().item()
    assert 0.25 < dropped < 0.35
    kept = labels != 10
    assert torch.equal(labels[kept], batch["labels"]["digit"][kept])


def test_guidance_scale_one_is_the_conditional_model_and_zero_the_unconditional():
    _, module = build()
    for p in module.model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    layout = {"image": module.adapters["image"].layout(3)}
    x = {"image": torch.randn(3, 16, 4)}
    t, labels = torch.full((3,), 0.5), {"digit": torch.tensor([1, 2, 3])}
    null = {"digit": torch.full((3,), 10)}
    conditional = module.model({"image": layout["image"].with_x(x["image"])}, t, labels)["image"]
    unconditional = module.model({"image": layout["image"].with_x(x["image"])}, t, null)["image"]
    torch.testing.assert_close(
        guided_prediction(module.model, layout, labels, scale=1.0)(x, t)["image"], conditional
    )
    torch.testing.assert_close(
        guided_prediction(module.model, layout, labels, scale=0.0)(x, t)["image"], unconditional
    )
    guided = guided_prediction(module.model, layout, labels, scale=3.0)(x, t)["image"]
    torch.testing.assert_close(guided, unconditional + 3.0 * (conditional - unconditional))


def test_a_nan_loss_stops_with_a_message():
    data, module = build()
    batch = next(iter(data.train_dataloader()))
    batch["media"][0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="loss is not finite at step 0"):
        module.training_step(batch, 0)


def test_unknown_label_key_is_named():
    recipe = load_recipe("image-digits", [*TINY, "conditioning.labels=[colour]"])
    with pytest.raises(KeyError, match="colour"):
        DiffusionModule(recipe, {"digit": [str(i) for i in range(10)]}, run_builder.build_adapters(recipe))


def test_class_index_by_name_or_index():
    _, module = build()
    assert module.class_index("digit", "7") == 7 and module.class_index("digit", 3) == 3
    with pytest.raises(KeyError, match="no class 'x'"):
        module.class_index("digit", "x")


def test_learning_rate_warms_up_then_follows_a_cosine_to_zero():
    factor = LearningRateSchedule(warmup=10, decay="cosine", total=110)
    assert [factor(s) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert factor(10) == 1.0 and factor(60) == pytest.approx(0.5) and factor(110) == pytest.approx(0.0)
    assert LearningRateSchedule(warmup=10, decay="constant", total=110)(500) == 1.0


def test_a_model_preset_sizes_the_backbone_and_recipe_keys_override_it():
    sizes = ["model.joint_depth=null", "model.single_depth=null", "model.width=null", "model.heads=null"]
    _, module = build(*sizes, "model.preset=MMDiT-tiny")
    model = module.model
    assert (len(model.joint_blocks), len(model.single_blocks), model.width) == (2, 2, 128)
    _, module = build(*sizes, "model.preset=MMDiT-tiny", "model.width=64")
    assert module.model.width == 64
    with pytest.raises(KeyError, match="MMDiT-tiny"):
        build("model.preset=MMDiT-huge")


def test_rotary_base_and_label_scale_are_recipe_keys():
    _, module = build("model.rope_theta=100", "model.label_init_std=0.02")
    assert module.model.rope_theta == 100
    assert module.model.label_embedders["digit"].embedding.weight.std().item() < 0.05
    _, default = build()
    assert default.model.rope_theta == 10000
    assert default.model.label_embedders["digit"].embedding.weight.std().item() > 0.5


def test_mlp_activation_is_a_recipe_key_and_an_unknown_one_is_named():
    _, exact = build("model.mlp_activation=gelu")
    mlp = exact.model.single_blocks[0].weights.mlp
    x = torch.randn(5, 32)
    torch.testing.assert_close(mlp(x), mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x))), rtol=0, atol=0)
    _, default = build()
    assert default.model.single_blocks[0].weights.mlp.act.approximate == "tanh"
    assert exact.model.state_dict().keys() == default.model.state_dict().keys()
    with pytest.raises(ValueError, match="mlp_activation.*'swish'"):
        build("model.mlp_activation=swish")


@pytest.mark.parametrize(
    ("precision", "network_dtype"), [("32", torch.float32), ("bf16-mixed", torch.bfloat16)]
)
def test_sampling_runs_the_network_in_the_training_precision(precision, network_dtype):
    """Under bf16-mixed the network samples under bf16 autocast, as it trained; the sampler's state (and so
    the media) stays float32, and the samples match float32 sampling within bf16 rounding."""
    torch.manual_seed(0)
    _, module = build(f"trainer.precision={precision}", "sample.steps=4")
    for p in module.model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    seen = []
    module.model.outputs["image"].linear.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    labels = {"digit": torch.arange(4)}
    media = module.generate(4, labels)["image"]
    assert set(seen) == {network_dtype} and media.dtype == torch.float32
    _, reference = build("trainer.precision=32", "sample.steps=4")
    reference.load_state_dict(module.state_dict())
    torch.testing.assert_close(media, reference.generate(4, labels)["image"], rtol=0, atol=0.05)


GAUSSIAN = ["objective.type=gaussian", "objective.learn_sigma=true", "sample.sampler=ddpm"]


def test_gaussian_diffusion_with_learned_variance_trains_and_samples():
    torch.manual_seed(0)
    data, module = build(*GAUSSIAN, "optimizer.lr=3e-3", "optimizer.warmup_steps=5")
    assert module.model.specs["image"].out_features == 2 * module.model.specs["image"].features
    batch = next(iter(data.train_dataloader()))
    before = diffusion_loss(module, batch, 0.0, torch.Generator().manual_seed(0)).item()
    trainer(60).fit(module, datamodule=data)
    after = diffusion_loss(module, batch, 0.0, torch.Generator().manual_seed(0)).item()
    assert after < 0.8 * before
    labels = {"digit": torch.tensor([1, 7])}
    for method in ("ddpm", "ddim"):
        images = module.generate(2, labels, steps=5, method=method, cfg=2.0)["image"]
        assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()
    with pytest.raises(KeyError, match="does not sample a gaussian objective"):
        module.generate(2, labels, steps=5, method="heun")


def test_guidance_leaves_the_learned_variance_and_unguided_channels_conditional():
    _, module = build(*GAUSSIAN, "sample.guided_channels=0")
    torch.nn.init.normal_(module.model.outputs["image"].linear.weight)
    features = module._guided_features(["image"])["image"]
    assert features.shape == (8,) and not features.any()  # 0 guided channels: cfg changes nothing
    layouts = {"image": module.adapters["image"].layout(2)}
    x, t = {"image": torch.randn(2, 16, 4)}, torch.full((2,), 0.5)
    labels = {"digit": torch.tensor([2, 5])}
    plain = guided_prediction(module.model, layouts, labels, scale=1.0)(x, t)["image"]
    guided = guided_prediction(
        module.model, layouts, labels, 4.0, guided_features=module._guided_features(["image"])
    )(x, t)["image"]
    torch.testing.assert_close(guided, plain)
    _, module = build(*GAUSSIAN)
    assert module._guided_features(["image"])["image"].tolist() == [True] * 4 + [False] * 4


def test_numbers_reach_both_guidance_halves_and_a_missing_one_is_named():
    data, module = build("conditioning.numbers=[seconds]")
    for p in module.model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    layout = {"image": module.adapters["image"].layout(2)}
    x, t = {"image": torch.randn(2, 16, 4)}, torch.full((2,), 0.5)
    labels, null = {"digit": torch.tensor([1, 2])}, {"digit": torch.full((2,), 10)}
    seconds = {"seconds": torch.tensor([1.0, 3.0])}
    tokens = {"image": layout["image"].with_x(x["image"])}
    unconditional = module.model(tokens, t, null, numbers=seconds)["image"]
    guided = guided_prediction(module.model, layout, labels, scale=0.0, numbers=seconds)(x, t)["image"]
    torch.testing.assert_close(guided, unconditional)
    other = module.model(tokens, t, null, numbers={"seconds": torch.tensor([1.0, 2.0])})["image"]
    assert torch.equal(other[0], unconditional[0]) and not torch.allclose(other[1], unconditional[1])
    # Digits carry no numbers: a recipe that asks for one fails at the first batch, naming it.
    batch = next(iter(data.train_dataloader()))
    with pytest.raises(KeyError, match=r"conditioning.numbers \['seconds'\]"):
        diffusion_loss(module, batch, 0.0)
    with pytest.raises(KeyError, match="seconds"):
        module.generate(2, labels, steps=1)
    images = module.generate(2, labels, {"seconds": torch.tensor([1.0, 2.0])}, steps=1)["image"]
    assert images.shape == (2, 1, 8, 8)
