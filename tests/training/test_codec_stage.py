"""The codec stage end to end, for each codec kind (the conv VAE and the harmonic codec): `mmdit fit` of an
autoencoder recipe writes a codec export, previews and a reconstruction eval; the audio adapter's codec
tokenizer reads that export, and a diffusion recipe trains, samples and evaluates on its latents through the
command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import soundfile
import torch

from mmdit.cli import main
from mmdit.codecs import load_codec
from mmdit.recipe import load_recipe
from mmdit.training.build import build_adapters
from mmdit.training.data import MediaDataModule
from mmdit.training.token_cache import CachedDataModule, CacheMiss
from modalities import build_adapter

TRAINING = [
    "autoencoder.crop=[2048]",
    "data.batch_size=8",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "optimizer.warmup_steps=2",
    "autoencoder.statistics_items=16",
    "sample.grid=4",
]
KINDS = {
    "conv": [
        "autoencoder.kind=conv",
        "autoencoder.latent_channels=4",
        "autoencoder.patch=1",
        "autoencoder.widths=[4,8,8]",
        "autoencoder.strides=[8,8]",
    ],
    "harmonic": [
        "autoencoder.kind=harmonic",
        "autoencoder.options.harmonic.timbre_channels=2",
        "autoencoder.options.harmonic.harmonics=8",
        "autoencoder.options.harmonic.noise_bands=4",
        "autoencoder.options.harmonic.width=8",
        "autoencoder.options.harmonic.blocks=1",
        "autoencoder.options.harmonic.n_fft=256",
    ],
}
LATENT_SHAPES = {"conv": [4, 250], "harmonic": [4, 63]}  # [D, T] of a 1 s note: D = 1 + 1 + 2 for harmonic


@pytest.fixture(scope="module", params=sorted(KINDS))
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def codec_run(tmp_path_factory, kind) -> Path:
    run_dir = tmp_path_factory.mktemp(f"codec-{kind}")
    torch.set_num_threads(1)
    assert main(["fit", "audio-notes-codec", *KINDS[kind], *TRAINING, f"run_dir={run_dir}"]) == 0
    return run_dir


def _normalisation(value: float | list[float]) -> torch.Tensor:
    """A loaded codec's scale or shift as a tensor that broadcasts over latents [D, T]."""
    return torch.tensor(value).reshape(-1, 1)


def test_a_codec_fit_writes_an_export_previews_and_a_reconstruction_eval(codec_run, kind):
    for name in ("codec.safetensors", "eval.json", "samples.png", "loss.png", "recipe.yaml"):
        assert (codec_run / name).is_file(), name
    report = json.loads((codec_run / "eval.json").read_text())
    assert set(report) == {"recipe", "reconstructed", "reference", "codec"}
    assert report["reconstructed"]["samples"] == report["reference"]["samples"] == 288
    assert report["reference"]["pitch_accuracy"] == 1.0
    latent_shape = report["codec"]["latent_shape"]
    assert latent_shape == LATENT_SHAPES[kind]
    assert report["codec"]["compression"] == round(16000 / (latent_shape[0] * latent_shape[1]), 2)
    codec = load_codec(codec_run / "codec.safetensors")
    # One shift and scale for the conv VAE's latents, one per channel for the harmonic codec's.
    assert isinstance(codec.scale, list) == (kind == "harmonic")
    assert (codec.shift, codec.scale) == (report["codec"]["shift"], report["codec"]["scale"])
    assert codec.extra["modality"] == "audio" and "audio-notes-codec" in codec.extra["recipe"]


def test_the_codec_tokenizer_normalises_latents_and_decodes_through_the_codec(codec_run):
    path = codec_run / "codec.safetensors"
    adapter = build_adapter("audio", tokenizer="codec", codec=str(path), patch_size=2)
    codec = load_codec(path)
    channels, frame = codec.config.latent_channels, codec.config.downsampling
    audio = torch.rand(3, 1, 16000) * 2 - 1
    tokens = adapter.encode(audio, {"seconds": torch.tensor([1.0, 0.5, 0.1])})
    columns = [math.ceil(seconds * 16000 / (2 * frame)) for seconds in (1.0, 0.5, 0.1)]
    assert tokens.x.shape == (3, columns[0], 2 * channels)
    assert adapter.stream("audio").features == 2 * channels
    assert tokens.mask.sum(1).tolist() == columns  # 2 latent frames a token
    padded = torch.nn.functional.pad(audio, (0, -16000 % frame))
    with torch.no_grad():
        z = codec.model.encode(padded).mode()
        expected = codec.model.decode(z)[..., :16000].clamp(-1, 1)
    scale, shift = _normalisation(codec.scale), _normalisation(codec.shift)
    assert torch.allclose(tokens.x[0, :, :channels].T / scale + shift, z[0, :, 0::2], atol=1e-5)
    decoded = adapter.decode(tokens)
    assert torch.allclose(decoded[0], expected[0], atol=1e-5)
    assert (decoded[1, :, columns[1] * 2 * frame :] == 0).all()  # past the clip's last real token


def test_a_codec_is_refused_by_the_tokenizers_it_does_not_belong_to(codec_run, tmp_path):
    with pytest.raises(ValueError, match="takes a `codec` path"):
        build_adapter("audio", tokenizer="codec")
    with pytest.raises(ValueError, match="2 channel"):
        build_adapter("audio", tokenizer="codec", codec=str(codec_run / "codec.safetensors"), channels=2)
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        build_adapter("audio", tokenizer="codec", codec=str(tmp_path / "nothing.safetensors"))


def test_a_diffusion_recipe_trains_samples_and_evaluates_on_the_codec_latents(codec_run, tmp_path):
    codec = codec_run / "codec.safetensors"
    run_dir = tmp_path / "latent"
    tiny = [
        f"streams.audio.options.codec={codec}",
        "data.cache=false",  # encode at every step: no `mmdit prepare` needed
        "model.width=32",
        "model.heads=2",
        "model.single_depth=1",
        "data.batch_size=16",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "optimizer.warmup_steps=1",
        "sample.steps=2",
        "sample.grid=3",
        "eval.samples=6",
    ]
    assert main(["fit", "audio-notes-latent", *tiny, f"run_dir={run_dir}"]) == 0
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["generated"]["samples"] == 6 and "pitch_accuracy" in report["generated"]
    out = tmp_path / "notes"
    args = ["sample", str(run_dir / "weights.safetensors"), "--n", "2", "--steps", "2", "--out", str(out)]
    assert main([*args, "--label", "pitch=A3", "--label", "timbre=0", "--number", "seconds=0.5"]) == 0
    audio, rate = soundfile.read(sorted(out.glob("*.wav"))[0])
    assert rate == 16000 and 0.45 * rate <= len(audio) <= 0.55 * rate


def test_cached_latents_equal_encoded_ones_and_another_codec_is_a_miss(
    codec_run, kind, tmp_path, monkeypatch
):
    monkeypatch.setenv("MMDIT_CACHE", str(tmp_path / "cache"))
    codec = codec_run / "codec.safetensors"
    overrides = [f"streams.audio.options.codec={codec}", "data.cache=true", "data.batch_size=128"]
    assert main(["prepare", "audio-notes-latent", *overrides]) == 0
    recipe = load_recipe("audio-notes-latent", overrides)
    adapters = build_adapters(recipe)
    cached = CachedDataModule(recipe, adapters).heldout[5]
    item = MediaDataModule(recipe, adapters).heldout[5]
    tokens = adapters["audio"].encode(
        item["media"][None], {"seconds": torch.tensor([item["numbers"]["seconds"]])}
    )
    # The cache encoded batches of 128, this one item alone, and batched
    # float32 convolutions round differently (measured: 5e-5 of latents up to about 1).
    difference = (cached["tokens"]["x"] - tokens.x[0]).abs().max()
    assert difference <= 2e-4 * tokens.x.abs().max(), difference
    assert torch.equal(cached["tokens"]["mask"], tokens.mask[0])
    retrained = tmp_path / "retrained"
    assert main(["fit", "audio-notes-codec", *KINDS[kind], *TRAINING, "seed=1", f"run_dir={retrained}"]) == 0
    recipe_new = load_recipe(
        "audio-notes-latent",
        [*overrides[1:], f"streams.audio.options.codec={retrained / 'codec.safetensors'}"],
    )
    with pytest.raises(CacheMiss):
        CachedDataModule(recipe_new, build_adapters(recipe_new))
