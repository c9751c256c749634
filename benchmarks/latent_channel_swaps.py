"""Which latent channels cost a latent audio model's generated notes? Generate one note per held-out note
(its labels and length), encode the real notes with the same frozen codec, and judge the codec's decoding
of real and generated latents with one group of channels swapped between them (and the generated pitch
held at its median over the note), beside each channel's frame-to-frame jitter.

    python benchmarks/latent_channel_swaps.py WEIGHTS [--every 3]

WEIGHTS: an `audio-notes-latent` run's weights.safetensors (a harmonic codec: channel 0 pitch, 1..C
loudness, then timbre). The generated latents are the sampled tokens the adapter is asked to decode. Prints
one row per decoding: pitch accuracy (±50 cents), median cents, median harmonic-to-noise ratio.
"""

from __future__ import annotations

import argparse

import torch
from einops import rearrange

from mmdit.training.build import load_module
from mmdit.training.evaluate import own_splits, stacked
from modalities.audio.datasets import note_midi
from modalities.audio.harmonic_codec import PITCH_HALF_RANGE
from modalities.audio.metrics import pitch_scores


def latents(weights: str, every: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, object, object]:
    """-> real and generated normalised latents [B, D, T], the real clips [B, C, S], the codec, midi [B]."""
    module = load_module(weights).eval()
    stream = module.stream
    tokenizer = module.adapters[stream].tokenizer
    train, heldout = own_splits(module, stream)
    items = [heldout[i] for i in range(0, len(heldout), every)]
    sampled = []
    decode = tokenizer.decode
    tokenizer.decode = lambda x: sampled.append(x) or decode(x)  # keep the tokens generate decodes
    labels, numbers = stacked(items, "labels"), stacked(items, "numbers")
    with torch.no_grad():
        module.generate(len(items), labels, numbers, seed=0)
    frames = tokenizer.latent_frames
    generated = rearrange(sampled[-1].float(), "b n (p d) -> b d (n p)", p=tokenizer.patch_size)[..., :frames]
    clips = torch.stack([item["media"] for item in items])
    padding = frames * tokenizer.downsampling - clips.shape[-1]
    real = tokenizer.codec.encode(torch.nn.functional.pad(clips.float(), (0, padding)))
    midi = torch.tensor([note_midi(n) for n in train.classes["pitch"]])[labels["pitch"]]
    return real, generated, clips, tokenizer.codec, midi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights")
    parser.add_argument("--every", type=int, default=3, help="judge every n-th held-out note")
    args = parser.parse_args()
    real, generated, clips, codec, midi = latents(args.weights, args.every)
    raw_real, raw_generated = (z / codec.scale + codec.shift for z in (real, generated))
    loudness = raw_real[:, 1]
    note = loudness > loudness.amax(-1, keepdim=True) - 1.5  # frames within 30 dB of the note's loudest
    both = note[:, 1:] & note[:, :-1]
    print("channel: frame-to-frame jitter (std of the difference, raw units) real / generated")
    for channel in range(real.shape[1]):
        jitter = [z[:, channel].diff(dim=-1)[both].std().item() for z in (raw_real, raw_generated)]
        print(f"  {channel}: {jitter[0]:.5f} / {jitter[1]:.5f}")
    cents = 1200 * PITCH_HALF_RANGE  # raw pitch units -> cents
    for name, z in (("real", raw_real), ("generated", raw_generated)):
        within = torch.stack([z[b, 0][note[b]].std() for b in range(len(z))]).median() * cents
        print(f"pitch within a note ({name}): median std {within:.2f} cents")

    def row(name: str, z: torch.Tensor) -> None:
        audio = codec.decode(z)[..., : clips.shape[-1]].clamp(-1, 1).mean(1)
        s = pitch_scores(audio, codec.model.config.sample_rate, midi)
        accuracy, error, hnr = s["pitch_accuracy"], s["median_cents"], s["median_hnr_db"]
        print(f"{name:40s} pitch {accuracy:.3f}, {error:5.1f} cents, HNR {hnr:5.1f} dB")

    def swapped(base: torch.Tensor, other: torch.Tensor, channels: list[int]) -> torch.Tensor:
        z = base.clone()
        z[:, channels] = other[:, channels]
        return z

    measured = codec.model.config.measured_channels  # pitch, then a loudness per audio channel
    loud, timbre = list(range(1, measured)), list(range(measured, real.shape[1]))
    row("real", real)
    row("generated", generated)
    row("real, generated pitch", swapped(real, generated, [0]))
    row("generated, real pitch", swapped(generated, real, [0]))
    row("real, generated loudness", swapped(real, generated, loud))
    row("real, generated timbre", swapped(real, generated, timbre))
    held = generated.clone()
    held[:, 0] = torch.stack([generated[b, 0][note[b]].median() for b in range(len(generated))])[:, None]
    row("generated, pitch held at its median", held)


if __name__ == "__main__":
    main()
