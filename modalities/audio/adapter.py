"""Audio as a stream of tokens: fixed-length clips (shorter ones zero-padded, their true duration given as the
number "seconds") through a mel or a waveform tokenizer, with the padding masked.

Saved clips hold only their real part: `decode` zeroes every sample past the last real token (the mask),
and `save` drops trailing all-zero samples, so a clip asked for 0.5 s is written 0.5 s long, rounded up to
one time column of tokens (mel columns of 4 frames at hop 256: 64 ms).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from einops import rearrange
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import Dataset

from mmdit.contract import ModalityAdapter, StreamSpec, Tokens
from modalities.audio.codec_tokenizer import CodecTokenizer
from modalities.audio.datasets import (
    AUDIO_SUFFIXES,
    AudioFolder,
    NotesDataset,
    fit_length,
    note_midi,
    read_audio,
)
from modalities.audio.metrics import judge_log_mel, log_mel_statistics, pitch_scores
from modalities.audio.reconstruction import multi_resolution_stft_loss
from modalities.audio.tokenizers import MelTokenizer, Tokenizer, WaveformTokenizer
from modalities.common.folders import folder_source
from modalities.common.judges import frechet_distance
from modalities.common.splits import SPLITS, matching_subset

TOKENIZERS = ("mel", "waveform", "codec")


class AudioAdapter(ModalityAdapter):
    """Clips [B, C, S] in [-1, 1], S = seconds × sample_rate, as tokens of a mel or a waveform tokenizer.

    tokenizer "mel": patch_size = p frames per token (whole columns, 1D RoPE) or [bins, frames] (2D patches,
    2D RoPE); n_fft, hop_length, n_mels, f_max set the spectrogram, griffin_lim_iters the vocoder.
    tokenizer "waveform": patch_size = p samples per token (1D RoPE); exact, for short clips.
    tokenizer "codec": `codec` = a codec-stage export (codec.safetensors); patch_size = p latent frames per
    token (1D RoPE); decoding is the codec's decoder.
    Numbers: {"seconds": [B]} per clip (default: all of `seconds`); tokens past a clip's end are masked.
    """

    name = "audio"
    file_suffix = ".wav"
    read_suffixes = AUDIO_SUFFIXES

    def __init__(
        self,
        sample_rate: int = 16000,
        channels: int = 1,
        seconds: float = 1.0,
        tokenizer: str = "mel",
        patch_size: int | Sequence[int] = 4,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 128,
        f_max: float = 4000.0,
        griffin_lim_iters: int = 32,
        codec: str | None = None,
    ) -> None:
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"audio tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
        if channels not in (1, 2):
            raise ValueError(f"audio channels must be 1 (mono) or 2 (stereo), got {channels}")
        self.sample_rate, self.channels, self.seconds = sample_rate, channels, float(seconds)
        self.samples = round(seconds * sample_rate)
        if (tokenizer == "codec") != (codec is not None):
            raise ValueError("audio tokenizer 'codec' takes a `codec` path (a codec.safetensors export)")
        if tokenizer in ("waveform", "codec") and not isinstance(patch_size, int):
            raise ValueError(f"the {tokenizer} tokenizer takes patch_size: int, got {patch_size}")
        if tokenizer == "codec":
            self.tokenizer: Tokenizer = CodecTokenizer(codec, self.samples, channels, patch_size)
        elif tokenizer == "waveform":
            self.tokenizer = WaveformTokenizer(self.samples, channels, patch_size)
        else:
            patch = patch_size if isinstance(patch_size, int) else tuple(patch_size)
            self.tokenizer = MelTokenizer(
                sample_rate,
                self.samples,
                channels,
                patch,
                n_fft,
                hop_length,
                n_mels,
                f_max,
                griffin_lim_iters,
            )

    @property
    def token_seconds(self) -> float:
        """Duration one time column of tokens covers: the shortest usable clip."""
        return self.tokenizer.samples_per_column / self.sample_rate

    def stream(self, name: str) -> StreamSpec:
        return StreamSpec(name, features=self.tokenizer.features, positions="rope", axes=self.tokenizer.axes)

    def _seconds(self, numbers: Mapping[str, Tensor] | None, batch_size: int) -> Tensor:
        """The clips' durations [B] from the batch's numbers (default: full length), checked."""
        if numbers is None or "seconds" not in numbers:
            return torch.full((batch_size,), self.seconds)
        seconds = torch.as_tensor(numbers["seconds"], dtype=torch.float64).cpu()
        if seconds.shape != (batch_size,) or not torch.isfinite(seconds).all():
            raise ValueError(f"numbers['seconds'] must be [B={batch_size}] finite floats, got {seconds}")
        if (seconds <= 0).any() or (seconds > self.seconds + 1e-6).any():
            raise ValueError(
                f"numbers['seconds'] must lie in (0, {self.seconds}] (the adapter's clip length), "
                f"got {seconds.tolist()}"
            )
        return seconds

    def _mask(self, pos: Tensor, seconds: Tensor) -> Tensor:
        """Real tokens [B, N]: those whose time column starts before the clip's end."""
        columns = self.tokenizer.real_columns(torch.round(seconds * self.sample_rate))
        return self.tokenizer.time_column(pos) < columns.to(pos.device)[:, None]

    def encode(self, media: Tensor, numbers: Mapping[str, Tensor] | None = None) -> Tokens:
        """Clips [B, C, S] in [-1, 1] -> Tokens(x [B, N, F], pos [B, N, A], mask from numbers["seconds"])."""
        if media.ndim != 3 or media.shape[1:] != (self.channels, self.samples):
            raise ValueError(
                f"audio must be [B, C={self.channels}, S={self.samples}] ({self.seconds} s at "
                f"{self.sample_rate} Hz), got {tuple(media.shape)}"
            )
        x, pos = self.tokenizer.encode(media)
        return Tokens(x, pos, self._mask(pos, self._seconds(numbers, len(media))))

    def decode(self, tokens: Tokens) -> Tensor:
        """Tokens -> clips [B, C, S] in [-1, 1] on the CPU; samples past the last real token are zero."""
        audio = self.tokenizer.decode(tokens.x)
        columns = torch.where(tokens.mask, self.tokenizer.time_column(tokens.pos) + 1, 0).amax(-1).cpu()
        ends = (columns * self.tokenizer.samples_per_column)[:, None, None]
        return torch.where(torch.arange(audio.shape[-1]) < ends, audio, 0.0)

    def layout(self, batch_size: int, numbers: Mapping[str, Tensor] | None = None) -> Tokens:
        """Zeros x [B, N, F], positions, and a mask that ends each clip at numbers["seconds"]."""
        pos = self.tokenizer.positions(batch_size)
        x = torch.zeros(batch_size, pos.shape[1], self.tokenizer.features)
        return Tokens(x, pos, self._mask(pos, self._seconds(numbers, batch_size)))

    def encoding_identity(self) -> dict[str, Any]:
        """The codec file's digest under the codec tokenizer (cached tokens of another codec are stale)."""
        return self.tokenizer.identity()

    def default_numbers(self) -> dict[str, float]:
        return {"seconds": self.seconds}

    def load(self, path: str | Path) -> Tensor:
        """A WAV / FLAC / OGG file -> [C, S'] at the adapter's rate and channels (S' the file's length)."""
        audio = read_audio(path, self.sample_rate, self.channels)
        if audio.shape[-1] < self.token_seconds * self.sample_rate:
            raise ValueError(
                f"audio file {path} lasts {audio.shape[-1] / self.sample_rate:.4f} s, shorter than one "
                f"token ({self.token_seconds:.4f} s)"
            )
        return audio

    def item(self, path: str | Path) -> dict[str, Any]:
        """A clip of up to `seconds` as an item: zero-padded to `seconds`, with {"seconds": its duration}
        (the mask hides the padding, as for the folder datasets' shorter clips); a longer one is an error
        naming the file and both lengths, since cropping it would describe part of it."""
        audio = self.load(path)
        samples = round(self.seconds * self.sample_rate)
        if audio.shape[-1] > samples:
            raise ValueError(
                f"{path}: audio of shape {list(audio.shape)} ({audio.shape[-1] / self.sample_rate:.3f} s); "
                f"this model reads at most {[audio.shape[0], samples]} ({self.seconds:g} s)"
            )
        media, share = fit_length(audio, samples)
        return {"media": media, "numbers": {"seconds": share * self.seconds}}

    def save(self, item: Tensor, path: str | Path) -> Path:
        """item [C, S] in [-1, 1] -> a sound file (format from the suffix: .wav / .flac 16-bit, .ogg Vorbis)
        without its trailing all-zero samples (the padding `decode` zeroed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        audio = item.detach().float().cpu().clamp(-1, 1)
        nonzero = torch.nonzero(audio.abs().amax(0)).flatten()
        end = int(nonzero[-1]) + 1 if len(nonzero) else 0
        soundfile.write(path, rearrange(audio[:, :end], "c s -> s c").numpy(), self.sample_rate)
        return path

    def preview(self, media: Tensor, path: str | Path, columns: int | None = None) -> Path:
        """media [B, C, S] -> a PNG grid of log-mel spectrograms (channels mixed), `columns` wide (default
        ceil(sqrt(B)))."""
        spectrograms = judge_log_mel(media.detach().float().cpu().mean(1), self.sample_rate).numpy()
        count = len(spectrograms)
        cols = columns or math.ceil(math.sqrt(count))
        rows = math.ceil(count / cols)
        figure = Figure(figsize=(1.6 * cols, 1.2 * rows), dpi=100)
        axes = figure.subplots(rows, cols, squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if i < count:
                ax.imshow(spectrograms[i], origin="lower", aspect="auto", cmap="magma")
        figure.subplots_adjust(0.01, 0.01, 0.99, 0.99, 0.05, 0.05)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
        return path

    def dataset(self, source: str | Mapping[str, Any], split: str, seed: int = 0) -> Dataset:
        """Source "notes" (synthesised, needs 16 kHz mono 1 s clips) or {"folder": PATH, "label": NAME}
        (files cropped / padded to `seconds`); split "train" or "heldout"; `seed` draws the notes or the
        folder's split."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if source == "notes":
            wanted = (NotesDataset.SAMPLE_RATE, 1, NotesDataset.SECONDS)
            if (self.sample_rate, self.channels, self.seconds) != wanted:
                raise ValueError(
                    "the notes dataset is 1 s of mono audio at 16 kHz; set sample_rate: 16000, channels: 1, "
                    f"seconds: 1.0 (got {self.sample_rate}, {self.channels}, {self.seconds})"
                )
            return NotesDataset(split, seed=seed)
        folder = folder_source(source, "audio", bundled=["notes"])
        return AudioFolder(
            folder.path, split, self.sample_rate, self.channels, self.seconds, self.token_seconds,
            seed=seed, label=folder.label,
        )  # fmt: skip

    def reconstruction_loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        """A codec stage's loss: mean absolute error of the samples plus the multi-resolution STFT loss
        (magnitudes at 256-2048-point FFTs), which hears the noise floor an L1 on samples hardly sees."""
        return (prediction - target).abs().mean() + multi_resolution_stft_loss(prediction, target)

    def evaluate(
        self, generated: Tensor, labels: Mapping[str, Tensor], train: Dataset, heldout: Dataset
    ) -> dict[str, dict[str, float]]:
        """Judge generated clips [B, C, S] asked for with `labels` ([B] per label name).

        "frechet_distance": between log-mel statistics (`log_mel_statistics`) of the generated clips and of
        the held-out split; the reference row compares a train subset with held-out's class counts.
        With a "pitch" label whose classes are note names: "pitch_accuracy" (share within ±50 cents of the
        requested note, YIN estimate) and "median_cents" (median absolute error); the reference row scores
        the real held-out clips against their own labels."""
        heldout_items = [heldout[i] for i in range(len(heldout))]
        heldout_audio = torch.stack([item["media"] for item in heldout_items]).mean(1)
        heldout_features = log_mel_statistics(heldout_audio, self.sample_rate)
        keys = sorted(getattr(train, "classes", {}))
        train_classes = np.array([_class_key(train[i]["labels"], keys) for i in range(len(train))])
        heldout_classes = np.array([_class_key(item["labels"], keys) for item in heldout_items])
        subset = matching_subset(train_classes, heldout_classes, seed=0)
        reference_audio = torch.stack([train[int(i)]["media"] for i in subset]).mean(1)
        generated_audio = generated.detach().float().cpu().mean(1)
        report = {
            "generated": {
                "frechet_distance": frechet_distance(
                    log_mel_statistics(generated_audio, self.sample_rate), heldout_features
                ),
                "samples": len(generated),
            },
            "reference": {
                "frechet_distance": frechet_distance(
                    log_mel_statistics(reference_audio, self.sample_rate), heldout_features
                ),
                "samples": len(heldout_items),
            },
        }
        names = getattr(train, "classes", {}).get("pitch")
        if names and "pitch" in labels:
            midi = torch.tensor([note_midi(n) for n in names])
            heldout_pitch = torch.tensor([item["labels"]["pitch"] for item in heldout_items])
            report["generated"].update(pitch_scores(generated_audio, self.sample_rate, midi[labels["pitch"]]))
            report["reference"].update(pitch_scores(heldout_audio, self.sample_rate, midi[heldout_pitch]))
        return report


def _class_key(labels: Mapping[str, int], keys: list[str]) -> int:
    """An item's labels (all keys) as one integer, equal for items of the same label combination."""
    return hash(tuple(labels.get(k, -1) for k in keys))
