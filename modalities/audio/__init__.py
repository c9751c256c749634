"""Audio: fixed-length clips [C, S] in [-1, 1] as log-mel or waveform tokens with the padding of shorter
clips masked, WAV / FLAC / OGG files, the synthesised `notes` set or a folder of a user's sounds, and YIN
pitch plus a log-mel Fréchet distance for evaluation; the `harmonic` codec kind (a DDSP harmonic-plus-noise
codec) for the two-stage recipes."""

from modalities.audio.adapter import AudioAdapter
from modalities.audio.datasets import AudioFolder, NotesDataset, read_audio
from modalities.audio.harmonic_codec import HarmonicCodec, HarmonicCodecConfig
from modalities.audio.tokenizers import MelTokenizer, WaveformTokenizer

__all__ = [
    "AudioAdapter",
    "AudioFolder",
    "HarmonicCodec",
    "HarmonicCodecConfig",
    "MelTokenizer",
    "NotesDataset",
    "WaveformTokenizer",
    "read_audio",
]
