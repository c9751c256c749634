"""Converted checkpoints compute what diffusers computes, and convert back bit for bit.

Random tiny configs on the CPU, both models in float64: outputs agree to 1e-9 of the output's scale, far
below any float32 effect, so no library update or thread count moves the comparison. One float32 case
checks that ours is as accurate in float32 as diffusers is (both measured against the float64 output)."""

import json

import pytest
import torch
from diffusers import DiTTransformer2DModel, SD3Transformer2DModel
from diffusers.models.normalization import RMSNorm
from einops import rearrange
from safetensors.torch import save_file

from mmdit.cli import main
from mmdit.contract import StreamSpec
from mmdit.convert import convert_state, load_backbone
from mmdit.convert.dit import dit_conversion
from mmdit.convert.rules import invert
from mmdit.model.backbone import MMDiT
from mmdit.model.presets import preset
from mmdit.model.tokens import Tokens
from modalities.common.patches import patchify, unpatchify

FLOAT64_TOLERANCE = 1e-9
"""Of the output's scale: float64 rounding through a few tiny blocks stays near 1e-15, so any real
difference in the computed function (a wrong epsilon, frequency or order) shows far above it."""


def _close_to_scale(ours: torch.Tensor, theirs: torch.Tensor, tolerance: float = FLOAT64_TOLERANCE) -> None:
    assert ours.dtype == theirs.dtype == torch.float64
    error = (ours - theirs).abs().max().item()
    scale = theirs.abs().max().item()
    assert error <= tolerance * scale, (
        f"max |difference| {error:.3g} is above {tolerance:g} of the output scale {scale:.3g}"
    )


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Random values everywhere (diffusers zero-initialises some layers), so every weight is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(
                torch.randn(p.shape, generator=generator) * (0.3 if "embedding_table" not in name else 1.0)
            )


def _tie_block_embedders(model: DiTTransformer2DModel) -> None:
    """diffusers' DiT keeps a timestep + class embedder per block; converted DiTs hold equal copies."""
    first = model.transformer_blocks[0].norm1.emb.state_dict()
    for block in model.transformer_blocks[1:]:
        block.norm1.emb.load_state_dict(first)


def _dit(patch: int, size: int, learn_sigma: bool, seed: int = 0) -> DiTTransformer2DModel:
    torch.manual_seed(seed)
    model = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8 if learn_sigma else 4,
        num_layers=2,
        sample_size=size,
        patch_size=patch,
        num_embeds_ada_norm=10,
    ).eval()
    _randomise(model, seed)
    _tie_block_embedders(model)
    return model


def _dit_inputs(size: int, batch: int = 3):
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(batch, 4, size, size, generator=generator)
    return latents, torch.tensor([0, 417, 999])[:batch], torch.tensor([3, 10, 7])[:batch]  # 10 = null class


def _ours_dit(model, latents, steps, classes, patch):
    """Our converted DiT on the same inputs, laid out as diffusers' output [B, C_out, H, W]."""
    x, pos = patchify(latents, patch)
    out = model(
        {"image": Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool))}, steps / 1000, {"class": classes}
    )
    halves = out["image"].chunk(out["image"].shape[-1] // x.shape[-1], dim=-1)  # (prediction, variance)
    return torch.cat([unpatchify(h, pos, patch, latents.shape[1]) for h in halves], dim=1)


@pytest.mark.parametrize("patch, size, learn_sigma", [(2, 8, True), (1, 6, False), (4, 16, True)])
def test_diffusers_dit_matches(patch, size, learn_sigma):
    theirs = _dit(patch, size, learn_sigma)
    ours, description, rules = convert_state("dit", theirs.state_dict(), dict(theirs.config))
    assert description["classes"] == 10 and description["learn_sigma"] == learn_sigma
    # Round trip: every tensor diffusers held comes back bit for bit.
    back = invert(rules, ours.state_dict())
    original = theirs.state_dict()
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)
    latents, steps, classes = _dit_inputs(size)
    with torch.no_grad():
        expected = theirs.double()(latents.double(), timestep=steps, class_labels=classes).sample
        _close_to_scale(_ours_dit(ours.double(), latents.double(), steps, classes, patch), expected)


def _original_layout(model: DiTTransformer2DModel) -> dict[str, torch.Tensor]:
    """The same weights in facebookresearch/DiT's layout (the mapping diffusers' own conversion undoes)."""
    sd, out = model.state_dict(), {}
    out["x_embedder.proj.weight"], out["x_embedder.proj.bias"] = (
        sd["pos_embed.proj.weight"],
        sd["pos_embed.proj.bias"],
    )
    out["pos_embed"] = model.pos_embed.pos_embed.clone()
    emb = "transformer_blocks.0.norm1.emb"
    out["y_embedder.embedding_table.weight"] = sd[f"{emb}.class_embedder.embedding_table.weight"]
    for p in ("weight", "bias"):
        out[f"t_embedder.mlp.0.{p}"] = sd[f"{emb}.timestep_embedder.linear_1.{p}"]
        out[f"t_embedder.mlp.2.{p}"] = sd[f"{emb}.timestep_embedder.linear_2.{p}"]
        out[f"final_layer.adaLN_modulation.1.{p}"] = sd[f"proj_out_1.{p}"]
        out[f"final_layer.linear.{p}"] = sd[f"proj_out_2.{p}"]
        for i in range(len(model.transformer_blocks)):
            b = f"transformer_blocks.{i}"
            qkv = [sd[f"{b}.attn1.to_{x}.{p}"] for x in "qkv"]
            out[f"blocks.{i}.attn.qkv.{p}"] = torch.cat(qkv)
            out[f"blocks.{i}.attn.proj.{p}"] = sd[f"{b}.attn1.to_out.0.{p}"]
            out[f"blocks.{i}.mlp.fc1.{p}"] = sd[f"{b}.ff.net.0.proj.{p}"]
            out[f"blocks.{i}.mlp.fc2.{p}"] = sd[f"{b}.ff.net.2.{p}"]
            out[f"blocks.{i}.adaLN_modulation.1.{p}"] = sd[f"{b}.norm1.linear.{p}"]
    return out


def _as_original_dit(model: DiTTransformer2DModel) -> None:
    """Make diffusers' DiT compute the original DiT's function: time frequencies over half (not half - 1)
    and LayerNorm eps 1e-6 before the MLP (both are where its port deviates)."""
    for block in model.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0
        block.norm3.eps = 1e-6


@pytest.mark.parametrize("patch, size", [(2, 8), (4, 8)])
def test_original_dit_layout_matches(patch, size):
    theirs = _dit(patch, size, learn_sigma=True, seed=3)
    original = _original_layout(theirs)
    _as_original_dit(theirs)
    ours, description, rules = convert_state("dit", original, heads=2)  # shapes do not tell the heads
    assert description["model"]["time_frequency_shift"] == 0 and description["model"]["mlp_norm_eps"] == 1e-6
    back = invert(rules, ours.state_dict())
    assert set(back) == set(original) and all(torch.equal(back[k], original[k]) for k in original)
    latents, steps, classes = _dit_inputs(size)
    with torch.no_grad():
        expected = theirs.double()(latents.double(), timestep=steps, class_labels=classes).sample
        _close_to_scale(_ours_dit(ours.double(), latents.double(), steps, classes, patch), expected)


def _sd3(qk_norm: str | None, patch: int, seed: int = 0) -> SD3Transformer2DModel:
    torch.manual_seed(seed)
    model = SD3Transformer2DModel(
        sample_size=8,
        patch_size=patch,
        in_channels=4,
        num_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        caption_projection_dim=32,
        pooled_projection_dim=12,
        out_channels=4,
        pos_embed_max_size=12,
        qk_norm=qk_norm,
    ).eval()
    _randomise(model, seed)
    return model


def _sd3_inputs(height: int, width: int, text_length: int) -> tuple[torch.Tensor, ...]:
    """(latents [2, 4, H, W], context [2, L, 24], pooled [2, 12], timestep [2]) in float64."""
    generator = torch.Generator().manual_seed(2)
    latents = torch.randn(2, 4, height, width, generator=generator, dtype=torch.float64)
    context = torch.randn(2, text_length, 24, generator=generator, dtype=torch.float64)
    pooled = torch.randn(2, 12, generator=generator, dtype=torch.float64)
    return latents, context, pooled, torch.tensor([250.0, 980.0], dtype=torch.float64)


def _ours_sd3(model: MMDiT, latents, context, pooled, timestep, patch: int) -> torch.Tensor:
    """Our converted SD3 on diffusers' inputs, laid out as its output [B, C, H, W]."""
    x, pos = patchify(latents, patch)
    length = context.shape[1]
    streams = {
        "image": Tokens(x, pos, torch.ones(x.shape[:2], dtype=torch.bool)),
        "text": Tokens(context, context.new_zeros(2, length, 0), torch.ones(2, length, dtype=torch.bool)),
    }
    out = model(streams, timestep / 1000, pooled={"pooled": pooled})
    return unpatchify(out["image"], pos, patch, 4)


def _rms_norm_in_input_dtype(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """diffusers' RMSNorm formula with its mean square taken in the input's dtype: diffusers takes it in
    float32 whatever the input, which would put float32 rounding (~1e-9 of the scale here) into the float64
    reference."""
    normed = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + self.eps)
    return normed * self.weight if self.weight is not None else normed


@pytest.mark.parametrize("qk_norm", [None, "rms_norm"])
@pytest.mark.parametrize("patch, height, width, text_length", [(2, 8, 8, 5), (2, 12, 20, 9), (1, 6, 4, 1)])
def test_diffusers_sd3_matches(qk_norm, patch, height, width, text_length, monkeypatch):
    monkeypatch.setattr(RMSNorm, "forward", _rms_norm_in_input_dtype)
    theirs = _sd3(qk_norm, patch)
    ours, _, rules = convert_state("sd3", theirs.state_dict(), dict(theirs.config))
    back = invert(rules, ours.state_dict())
    original = theirs.state_dict()
    assert set(back) == set(original) and all(torch.equal(back[k], original[k]) for k in original)
    inputs = _sd3_inputs(height, width, text_length)
    with torch.no_grad():
        expected = theirs.double()(*inputs).sample
        _close_to_scale(_ours_sd3(ours.double(), *inputs, patch), expected)


def test_sd3_in_float32_is_as_accurate_as_diffusers():
    """In float32 both models round; against the float64 output of the same weights, ours may err at most
    4x as much as diffusers' own float32 forward does (the factor allows a different summation order)."""
    theirs = _sd3(None, 2)
    ours, _, _ = convert_state("sd3", theirs.state_dict(), dict(theirs.config))
    inputs = _sd3_inputs(12, 20, 9)
    as_float = [x.float() for x in inputs]
    with torch.no_grad():
        ours_float = _ours_sd3(ours, *as_float, 2).double()
        theirs_float = theirs(*as_float).sample.double()
        exact = theirs.double()(*inputs).sample
    ours_error, theirs_error = (ours_float - exact).abs(), (theirs_float - exact).abs()
    scale = exact.abs().max().item()
    assert theirs_error.max().item() > 1e-9 * scale  # float32 did round: the bound below is not vacuous
    assert ours_error.max().item() <= 4 * theirs_error.max().item(), (
        f"float32 error {ours_error.max().item():.3g} against diffusers' own {theirs_error.max().item():.3g}"
    )


def test_conversion_refuses_what_does_not_fit():
    theirs = _dit(2, 8, learn_sigma=True)
    state, config = theirs.state_dict(), dict(theirs.config)
    with pytest.raises(KeyError, match="unexpected key 'extra.weight'"):
        convert_state("dit", {**state, "extra.weight": torch.zeros(1)}, config)
    missing = {k: v for k, v in state.items() if k != "proj_out_1.bias"}
    with pytest.raises(KeyError, match="missing key 'proj_out_1.bias'"):
        convert_state("dit", missing, config)
    wrong = {**state, "transformer_blocks.1.ff.net.2.weight": torch.zeros(32, 64)}
    with pytest.raises(ValueError, match=r"transformer_blocks.1.ff.net.2.weight \(32, 64\)"):
        convert_state("dit", wrong, config)
    differing = {**state}
    key = "transformer_blocks.1.norm1.emb.timestep_embedder.linear_1.bias"
    differing[key] = differing[key] + 1
    with pytest.raises(ValueError, match="linear_1.bias differs"):
        convert_state("dit", differing, config)
    with pytest.raises(KeyError, match="unknown checkpoint kind"):
        convert_state("sdxl", state, config)


def test_sd35_dual_attention_is_refused():
    theirs = _sd3("rms_norm", 2)
    config = {**dict(theirs.config), "dual_attention_layers": [0]}
    with pytest.raises(ValueError, match=r"dual attention \(attn2 in blocks \[0\]\) is not supported yet"):
        convert_state("sd3", theirs.state_dict(), config)


def test_converted_dit_samples_through_the_cli(tmp_path):
    """`mmdit convert dit` on a DiT training checkpoint ({"model", "ema", ...}), then `mmdit sample`."""
    theirs = _dit(2, 8, learn_sigma=True, seed=5)
    original = _original_layout(theirs)
    source = tmp_path / "dit.pt"
    torch.save({"model": {}, "ema": original, "opt": {}, "args": None}, source)
    weights = tmp_path / "dit.safetensors"
    assert main(["convert", "dit", str(source), str(weights)]) == 2  # width 32 is no preset's: heads?
    assert main(["convert", "dit", str(source), str(weights), "--heads", "2"]) == 0
    # The export holds the EMA weights and rebuilds from its own metadata.
    backbone = load_backbone(weights)
    assert torch.equal(backbone.inputs["image"].bias, original["x_embedder.proj.bias"])
    out = tmp_path / "samples"
    # Random weights' learned variance: 4 respaced DDPM steps overflow to NaN (refused), 25 stay finite.
    assert main(["sample", str(weights), "--n", "2", "--label", "3", "--steps", "4", "--out", str(out)]) == 2
    assert main(["sample", str(weights), "--n", "2", "--label", "3", "--steps", "25", "--out", str(out)]) == 0
    files = sorted(out.glob("*.safetensors"))
    assert len(files) == 2 and (out / "image_class-3_grid.png").exists()
    assert (
        main(["sample", str(weights), "--n", "1", "--sampler", "ddim", "--steps", "3", "--out", str(out)])
        == 0
    )


def test_convert_reads_a_diffusers_folder(tmp_path):
    theirs = _sd3(None, 2)
    folder = tmp_path / "sd3" / "transformer"
    folder.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in theirs.state_dict().items()},
        folder / "diffusion_pytorch_model.safetensors",
    )
    (folder / "config.json").write_text(json.dumps(dict(theirs.config)))
    weights = tmp_path / "sd3.safetensors"
    assert main(["convert", "sd3", str(tmp_path / "sd3"), str(weights)]) == 0
    model = load_backbone(weights)
    table = theirs.state_dict()["pos_embed.pos_embed"][0]
    assert torch.equal(rearrange(model.pos_tables["image"].table, "h w d -> (h w) d"), table)
    assert main(["convert", "sd3", str(tmp_path / "nothing"), str(weights)]) == 2


def test_a_dit_s2_checkpoint_of_the_official_shapes_converts_to_the_preset():
    """DiT-S/2 at 256 px in the official layout (made from an mmdit DiT-S/2 by the inverse rules): the width
    tells the heads, and the converted model has the paper's parameter count and the same weights."""
    sizes = preset("DiT-S/2")
    sizes.pop("patch_size")
    ours = MMDiT(
        [StreamSpec("image", 16, 32, "sincos", 2, (16, 16))], qk_norm=False, labels={"class": 1000}, **sizes
    )
    shapes = {  # what dit_conversion reads to size the model
        "x_embedder.proj.weight": torch.zeros(384, 4, 2, 2),
        "pos_embed": torch.zeros(1, 256, 384),
        "y_embedder.embedding_table.weight": torch.zeros(1001, 384),
        "final_layer.linear.weight": torch.zeros(32, 384),
        **{f"blocks.{i}.attn.qkv.weight": torch.zeros(1) for i in range(12)},
    }
    _, rules = dit_conversion(shapes)
    official = invert(rules, ours.state_dict())
    assert official["blocks.11.adaLN_modulation.1.weight"].shape == (6 * 384, 384)
    converted, description, _ = convert_state("dit", official)
    assert description["model"]["heads"] == 6 and description["model"]["single_depth"] == 12
    assert sum(p.numel() for p in converted.parameters()) == 32_963_360  # DiT-S/2, frozen table included
    assert all(torch.equal(converted.state_dict()[k], v) for k, v in ours.state_dict().items())
