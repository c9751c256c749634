"""Audio datasets: `notes`, musical notes synthesised from a seed (no download), and a folder of a user's own
sound files; plus reading files with soundfile and fitting clips to a fixed length.

Both datasets yield `{"media": Tensor [C, S] float in [-1, 1], "labels": {name: int}, "numbers":
{"seconds": float}}`: S = the adapter's `seconds` × sample rate; a shorter clip is zero-padded and "seconds"
gives its true duration, so the adapter can mask the padding and the model can be asked for a length.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF
from einops import repeat
from rich.progress import track
from torch import Tensor
from torch.utils.data import Dataset

from modalities.common.folders import labelled_files
from modalities.common.splits import SPLITS, split_indices

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MIDI_NOTES = tuple(range(48, 72))  # C3 .. B4: 130.8 Hz .. 493.9 Hz


def note_name(midi: int) -> str:
    """MIDI note number -> scientific pitch name (60 -> "C4", 69 -> "A4")."""
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def note_midi(name: str) -> int:
    """Scientific pitch name -> MIDI note number ("A4" -> 69); the inverse of `note_name`."""
    pitch, octave = name.rstrip("-0123456789"), name[len(name.rstrip("-0123456789")) :]
    if pitch not in NOTE_NAMES or not octave.lstrip("-").isdigit():
        raise ValueError(f"{name!r} is not a note name such as 'C4' or 'F#3'")
    return NOTE_NAMES.index(pitch) + 12 * (int(octave) + 1)


def midi_to_hz(midi: float | np.ndarray) -> float | np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi) - 69) / 12)


def read_audio(path: str | Path, sample_rate: int, channels: int) -> Tensor:
    """A WAV / FLAC / OGG file -> float [channels, S] in [-1, 1] at `sample_rate` (torchaudio's resampler).

    Channels: `channels=1` averages all of the file's channels; `channels=2` keeps a stereo file and copies a
    mono one to both sides; any other combination is an error. Unreadable, empty and non-finite files are
    errors naming the file."""
    path = Path(path)
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)  # [S, C]
    except soundfile.LibsndfileError as err:
        raise ValueError(f"cannot read audio {path}: {err}") from err
    if samples.shape[0] == 0:
        raise ValueError(f"audio file {path} is empty (no samples)")
    if not np.isfinite(samples).all():
        raise ValueError(f"audio file {path} holds NaN or infinite samples")
    audio = torch.from_numpy(samples.T.copy())
    if channels == 1:
        audio = audio.mean(0, keepdim=True)
    elif channels == 2 and audio.shape[0] == 1:
        audio = repeat(audio, "1 s -> 2 s")
    elif audio.shape[0] != channels:
        raise ValueError(f"audio file {path} has {audio.shape[0]} channels; cannot make {channels}")
    if rate != sample_rate:
        audio = AF.resample(audio, rate, sample_rate)
    return audio


def fit_length(audio: Tensor, samples: int) -> tuple[Tensor, float]:
    """audio [C, S'] -> (audio [C, samples] cropped or zero-padded at the end, share of `samples` that is
    real in (0, 1])."""
    real = min(audio.shape[-1], samples)
    return torch.nn.functional.pad(audio[..., :samples], (0, samples - real)), real / samples


class NotesDataset(Dataset):
    """Synthetic musical notes: one second at 16 kHz, MIDI 48-71 (two octaves from C3) in three timbres.

    Timbres (harmonic amplitudes a_n, envelope):
      organ: all harmonics 1..10, a_n = 1/n; 30 ms attack, sustained, 80 ms release at the end.
      pluck: harmonics 1..14, a_n = 1/n^1.2, 3 ms attack, exponential decay (0.35 s), faster for high n.
      reed:  odd harmonics 1, 3, .., 13, a_n = 1/n; 80 ms attack, slow decay, a 5 Hz tremolo.
    Per clip: random detune (±10 cents), peak loudness 0.25-0.9, onset 0-80 ms, harmonic phases.
    `variants` clips per (pitch, timbre), all from `seed`; the last `heldout` variants of every
    (pitch, timbre) are the held-out split, so both splits hold every class.

    media [1, 16000] in [-1, 1]; labels {"pitch": index into MIDI_NOTES, "timbre": index}; numbers
    {"seconds": 1.0}. `midi` [N] holds each clip's requested MIDI note, `hz` [N] its detuned fundamental.
    """

    SAMPLE_RATE = 16000
    SECONDS = 1.0
    TIMBRES = ("organ", "pluck", "reed")
    classes = {"pitch": [note_name(m) for m in MIDI_NOTES], "timbre": list(TIMBRES)}

    def __init__(self, split: str, variants: int = 20, heldout: int = 4, seed: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.media, self.labels, self.midi, self.hz = _synthesise(split, variants, heldout, seed)

    def __len__(self) -> int:
        return len(self.media)

    def item_labels(self, i: int) -> dict[str, int]:
        return {k: int(v[i]) for k, v in self.labels.items()}

    def __getitem__(self, i: int) -> dict:
        return {"media": self.media[i], "labels": self.item_labels(i), "numbers": {"seconds": self.SECONDS}}


@functools.lru_cache(maxsize=4)
def _synthesise(
    split: str, variants: int, heldout: int, seed: int
) -> tuple[Tensor, dict, np.ndarray, np.ndarray]:
    """One split of `NotesDataset`: (media [N, 1, 16000], labels {"pitch", "timbre": [N]}, midi [N], hz [N]).
    Kept in memory (a few seconds to make, 74 MB for both splits), so a run's evaluation reuses it."""
    rng = np.random.default_rng(seed)
    timbres = NotesDataset.TIMBRES
    pitch, timbre, variant = (
        a.ravel()
        for a in np.meshgrid(
            np.arange(len(MIDI_NOTES)), np.arange(len(timbres)), np.arange(variants), indexing="ij"
        )
    )
    count = len(pitch)
    # Every random draw covers all clips, so both splits come from one fixed stream of numbers.
    detune = rng.uniform(-10, 10, count)
    loudness = rng.uniform(0.25, 0.9, count)
    onset = rng.uniform(0.0, 0.08, count)
    phases = rng.uniform(0, 2 * np.pi, (count, 14))
    keep = variant >= variants - heldout if split == "heldout" else variant < variants - heldout
    rows = np.flatnonzero(keep)
    midi = np.array(MIDI_NOTES)[pitch[rows]]
    hz = midi_to_hz(midi + detune[rows] / 100)
    rate = NotesDataset.SAMPLE_RATE
    clips = np.stack(
        [_note(hz[i], timbres[timbre[r]], onset[r], phases[r], rate) for i, r in enumerate(rows)]
    )
    clips *= (loudness[rows] / np.abs(clips).max(axis=1))[:, None]
    labels = {"pitch": torch.from_numpy(pitch[rows]), "timbre": torch.from_numpy(timbre[rows])}
    return torch.from_numpy(clips).float()[:, None], labels, midi, hz


def _note(hz: float, timbre: str, onset: float, phases: np.ndarray, rate: int) -> np.ndarray:
    """One clip [rate] (one second) of a harmonic tone at `hz`, starting `onset` seconds in; unnormalised."""
    t = np.arange(rate) / rate
    local = np.clip(t - onset, 0.0, None)
    if timbre == "organ":
        harmonics = np.arange(1, 11)
        amplitudes = 1.0 / harmonics
        envelope = np.clip(local / 0.03, 0, 1) * np.clip((1.0 - t) / 0.08, 0, 1)
        decay = np.ones((len(harmonics), 1))
    elif timbre == "pluck":
        harmonics = np.arange(1, 15)
        amplitudes = 1.0 / harmonics**1.2
        envelope = np.clip(local / 0.003, 0, 1)
        # Higher harmonics die out faster, as on a real string.
        decay = np.exp(-local[None] * (1 + 0.4 * (harmonics[:, None] - 1)) / 0.35)
    elif timbre == "reed":
        harmonics = np.arange(1, 14, 2)
        amplitudes = 1.0 / harmonics
        envelope = np.clip(local / 0.08, 0, 1) * np.exp(-local / 1.5) * (1 + 0.1 * np.sin(2 * np.pi * 5 * t))
        decay = np.ones((len(harmonics), 1))
    else:
        raise KeyError(f"unknown timbre {timbre!r}")
    # Partials above the Nyquist frequency would alias back as inharmonic tones.
    audible = harmonics * hz < rate / 2
    waves = np.sin(2 * np.pi * hz * harmonics[:, None] * local[None] + phases[: len(harmonics), None])
    tone = (amplitudes[:, None] * decay * waves)[audible].sum(0)
    return tone * envelope * (t >= onset)


class AudioFolder(Dataset):
    """Sound files (WAV / FLAC / OGG) under `root`, recursively: read once, resampled to `sample_rate`,
    mixed to `channels` (see `read_audio`) and cropped / zero-padded to `seconds`.

    Labels: with every file inside a first-level sub-folder, the sub-folder's name is the class of
    `label` (`classes = {label: sorted names}`); with every file directly in `root` there are no labels.
    Files that cannot be used (unreadable, empty, NaN samples, shorter than `min_seconds`) are skipped with
    one warning that counts them and names the first; `skipped` lists (path, reason).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        sample_rate: int,
        channels: int,
        seconds: float,
        min_seconds: float,
        heldout_fraction: float = 0.1,
        seed: int = 0,
        label: str = "class",
    ) -> None:
        self.root = Path(root)
        files, labels, self.classes = labelled_files(self.root, AUDIO_SUFFIXES, "audio", label)
        total = round(seconds * sample_rate)
        self.media, self.seconds, self.labels, self.skipped = [], [], [], []
        index = split_indices(len(files), split, heldout_fraction, seed)
        for i in track(index, description=f"reading {self.root} ({split})", transient=True):
            try:
                audio = read_audio(files[i], sample_rate, channels)
            except ValueError as err:
                self.skipped.append((files[i], str(err)))
                continue
            if audio.shape[-1] < min_seconds * sample_rate:
                self.skipped.append((files[i], f"shorter than one token ({min_seconds:.3f} s)"))
                continue
            media, share = fit_length(audio, total)
            self.media.append(media)
            self.seconds.append(share * seconds)
            self.labels.append({} if labels[i] is None else {label: labels[i]})
        if self.skipped:
            path, reason = self.skipped[0]
            warnings.warn(
                f"{self.root}: skipped {len(self.skipped)} of {len(index)} {split} files "
                f"(e.g. {path}: {reason})",
                stacklevel=2,
            )
        if not self.media:
            raise ValueError(f"{self.root}: no usable audio file in the {split} split")

    def __len__(self) -> int:
        return len(self.media)

    def __getitem__(self, i: int) -> dict:
        return {"media": self.media[i], "labels": self.labels[i], "numbers": {"seconds": self.seconds[i]}}
