"""The audio adapter: token round trips, files, resampling, masks for variable lengths, datasets, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import torch
from torch.utils.data import Subset

from modalities import build_adapter
from modalities.audio.datasets import MIDI_NOTES, AudioFolder, NotesDataset, note_midi, note_name
from modalities.audio.metrics import cents_off, harmonic_to_noise_db, pitch_scores, yin_pitch
from modalities.audio.tokenizers import DB_FLOOR, X_CEILING, X_FLOOR

RATE = 16000


def sine(hz: float, seconds: float, rate: int = RATE, amplitude: float = 0.5) -> torch.Tensor:
    return amplitude * torch.sin(2 * math.pi * hz * torch.arange(round(seconds * rate)) / rate)


@pytest.fixture(scope="module")
def notes() -> NotesDataset:
    return NotesDataset("heldout")


def test_waveform_tokens_round_trip_exactly_with_padding_and_stereo():
    adapter = build_adapter("audio", channels=2, seconds=0.1, tokenizer="waveform", patch_size=64)
    audio = torch.rand(3, 2, 1600) * 2 - 1  # 1600 samples: 25 patches, the last one padded
    tokens = adapter.encode(audio)
    assert tokens.x.shape == (3, 25, 128) and tokens.pos.shape == (3, 25, 1)
    assert torch.equal(tokens.x[0, 1, :2], audio[0, :, 64])  # channels interleaved per sample
    assert torch.equal(adapter.decode(tokens), audio)


@pytest.mark.parametrize("patch_size", [4, [16, 4]], ids=["columns", "patches"])
def test_mel_tokens_hold_the_log_mel_within_float_rounding(patch_size):
    adapter = build_adapter("audio", patch_size=patch_size)
    mel = adapter.tokenizer
    audio = torch.stack([sine(220, 1.0), sine(330, 1.0, amplitude=0.05)])[:, None]
    tokens = adapter.encode(audio)
    columns = math.ceil((RATE // 256 + 1) / 4)  # 63 frames -> 16 columns of 4
    expected_tokens = columns if patch_size == 4 else columns * 128 // 16
    assert tokens.x.shape == (2, expected_tokens, 512 if patch_size == 4 else 64)
    assert tokens.x.min() == X_FLOOR and tokens.x.max() <= X_CEILING  # -60 dB .. full scale
    # Tokens -> log-mel is an exact rearrangement; log-mel -> mel power inverts the dB scale up to float
    # rounding (relative 1e-4) wherever the energy is above the -80 dB floor.
    assert torch.equal(mel.to_log_mel(tokens.x), mel.log_mel(audio))
    power = mel.mel(audio)
    floor = mel.reference_power * 10 ** (DB_FLOOR / 10)
    torch.testing.assert_close(
        mel.mel_power(mel.to_log_mel(tokens.x)), power.clamp_min(floor), rtol=1e-4, atol=0
    )
    if patch_size != 4:
        assert tokens.pos[0, :3].tolist() == [[0, 0], [0, 1], [0, 2]]  # (mel row, time column)


def test_griffin_lim_decoding_keeps_the_pitch(notes):
    adapter = build_adapter("audio")
    pick = torch.arange(0, len(notes), 24)[:12]
    audio = notes.media[pick]
    decoded = adapter.decode(adapter.encode(audio))
    assert decoded.shape == audio.shape and decoded.abs().max() <= 1
    scores = pitch_scores(decoded[:, 0], RATE, torch.from_numpy(notes.midi[pick.numpy()]))
    assert scores["pitch_accuracy"] == 1.0 and scores["median_cents"] < 15


def test_mask_marks_tokens_past_each_clip_duration():
    adapter = build_adapter("audio")  # a column = 4 frames of hop 256 = 1024 samples
    audio = torch.zeros(3, 1, RATE)
    tokens = adapter.encode(audio, {"seconds": torch.tensor([1.0, 0.5, 0.01])})
    assert tokens.mask.sum(1).tolist() == [16, math.ceil(8000 / 1024), 1]
    assert tokens.mask[1, :8].all() and not tokens.mask[1, 8:].any()
    patches = build_adapter("audio", patch_size=[32, 4]).encode(
        audio, {"seconds": torch.tensor([1.0, 0.5, 0.01])}
    )
    assert patches.mask.sum(1).tolist() == [64, 32, 4]  # 4 mel rows per column
    waveform = build_adapter("audio", tokenizer="waveform", patch_size=250)
    assert waveform.layout(2, {"seconds": torch.tensor([0.25, 0.26])}).mask.sum(1).tolist() == [16, 17]
    assert adapter.layout(2).mask.all()
    with pytest.raises(ValueError, match=r"seconds.*\(0, 1.0\]"):
        adapter.layout(1, {"seconds": torch.tensor([1.5])})


def test_decode_zeroes_padding_and_save_writes_only_the_real_part(tmp_path):
    adapter = build_adapter("audio", tokenizer="waveform", patch_size=250)
    audio = (torch.rand(2, 1, RATE) * 2 - 1).clamp(-0.9, 0.9) + 0.05  # no exact zeros
    tokens = adapter.encode(audio, {"seconds": torch.tensor([1.0, 0.3])})
    decoded = adapter.decode(tokens)
    assert torch.equal(decoded[1, :, :4800], audio[1, :, :4800]) and not decoded[1, :, 5000:].any()
    written = adapter.save(decoded[1], tmp_path / "clip.wav")
    assert soundfile.info(written).frames == 5000  # 0.3 s rounded up to whole 250-sample tokens


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_soundfile_write_read_round_trip(tmp_path, suffix):
    adapter = build_adapter("audio", channels=2)
    item = torch.stack([sine(220, 0.5), sine(440, 0.5, amplitude=0.3)]) + 0.001
    path = adapter.save(item, tmp_path / f"clip{suffix}")
    loaded = adapter.load(path)
    assert loaded.shape == item.shape
    assert (loaded - item).abs().max() <= 1 / 32768 + 1e-7  # 16-bit quantisation


def test_ogg_is_read(tmp_path):
    adapter = build_adapter("audio")
    path = adapter.save(sine(330, 0.5)[None], tmp_path / "clip.ogg")
    loaded = adapter.load(path)
    assert loaded.shape[0] == 1 and abs(loaded.shape[1] - 8000) < 200
    assert (
        abs(cents_off(yin_pitch(loaded, RATE), torch.tensor([64])).item() - 1200 * math.log2(330 / 329.63))
        < 5
    )


def test_resampling_and_channel_mixing(tmp_path):
    rate = 44100
    left, right = sine(440, 0.5, rate), sine(440, 0.5, rate, amplitude=0.1)
    soundfile.write(tmp_path / "stereo.wav", torch.stack([left, right], 1).numpy(), rate, subtype="FLOAT")
    mono = build_adapter("audio").load(tmp_path / "stereo.wav")
    assert mono.shape == (1, 8000)  # 0.5 s at 16 kHz
    assert abs(cents_off(yin_pitch(mono, RATE), torch.tensor([69])).item()) < 5
    assert abs(mono[0, 1000:7000].abs().max().item() - 0.3) < 0.01  # the mean of 0.5 and 0.1 amplitudes
    soundfile.write(tmp_path / "mono.wav", left.numpy(), rate, subtype="FLOAT")
    stereo = build_adapter("audio", channels=2).load(tmp_path / "mono.wav")
    assert stereo.shape == (2, 8000) and torch.equal(stereo[0], stereo[1])


def test_bad_files_are_errors_naming_them_or_counted_skips(tmp_path):
    adapter = build_adapter("audio")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "garbage.wav").write_bytes(b"not a wav file at all")
    soundfile.write(tmp_path / "a" / "empty.wav", np.zeros(0, dtype=np.float32), RATE)
    nan = sine(220, 0.5).numpy()
    nan[100] = np.nan
    soundfile.write(tmp_path / "b" / "nan.wav", nan, RATE, subtype="FLOAT")
    soundfile.write(tmp_path / "b" / "tiny.wav", sine(220, 0.01).numpy(), RATE)
    for name, reason in (
        ("a/garbage", "cannot read"),
        ("a/empty", "empty"),
        ("b/nan", "NaN"),
        ("b/tiny", "shorter"),
    ):
        with pytest.raises(ValueError, match=f"{name}.wav.*{reason}|{reason}.*{name}.wav"):
            adapter.load(tmp_path / f"{name}.wav")
    for i in range(3):
        soundfile.write(tmp_path / "b" / f"good{i}.wav", sine(220 + 10 * i, 0.4 + 0.4 * i).numpy(), RATE)
    with pytest.warns(UserWarning, match=r"skipped 4 of 7 train files"):
        data = AudioFolder(tmp_path, "train", RATE, 1, 1.0, min_seconds=0.064, heldout_fraction=0.0)
    assert len(data) == 3 and data.classes == {"class": ["a", "b"]}
    assert [round(data[i]["numbers"]["seconds"], 3) for i in range(3)] == [0.4, 0.8, 1.0]  # 1.2 s cropped
    assert all(data[i]["media"].shape == (1, RATE) for i in range(3))
    assert not data[0]["media"][0, 6400:].any()  # padding is silence


def test_notes_are_deterministic_balanced_and_in_tune(notes):
    again = NotesDataset("heldout")
    assert torch.equal(again.media, notes.media)
    train = NotesDataset("train")
    assert (len(train), len(notes)) == (24 * 3 * 16, 24 * 3 * 4)
    counts = np.bincount(notes.labels["pitch"] * 3 + notes.labels["timbre"])
    assert (counts == 4).all()
    assert not any(torch.equal(train.media[0], m) for m in notes.media)
    item = notes[0]
    assert item["media"].shape == (1, RATE) and item["numbers"] == {"seconds": 1.0}
    assert [note_name(m) for m in (48, 69, 71)] == ["C3", "A4", "B4"] and note_midi("F#3") == 54
    assert notes.classes["pitch"][0] == "C3" and len(notes.classes["pitch"]) == len(MIDI_NOTES)
    # The estimator is exact enough on the real clips that ±50 cents is a fair bar: the requested note
    # differs from the played one only by the ±10 cent detune.
    error = cents_off(yin_pitch(notes.media[:, 0], RATE), torch.from_numpy(notes.midi))
    assert error.abs().max() < 12


def test_yin_finds_the_fundamental_not_an_octave():
    clips = torch.stack([sine(130.81, 0.5) + sine(261.63, 0.5) * 2, sine(493.88, 0.5), torch.zeros(8000)])
    hz = yin_pitch(clips, RATE)
    assert abs(hz[0] - 130.81) < 1 and abs(hz[1] - 493.88) < 2 and torch.isnan(hz[2])
    # An octave off (C4 asked of a C3, B3 of a B4) is wrong, and so is a silent clip.
    scores = pitch_scores(clips, RATE, torch.tensor([60, 59, 59]))
    assert scores["pitch_accuracy"] == 0.0 and scores["median_cents"] == pytest.approx(1200, abs=1)


def test_evaluate_scores_real_clips_perfectly_and_wrong_pitches_poorly(notes):
    adapter = build_adapter("audio")
    train = NotesDataset("train")
    rows = torch.arange(0, len(notes), 6)  # 48 clips: every pitch, all timbres
    heldout = Subset(notes, rows.tolist())
    media, labels = notes.media[rows], {k: v[rows] for k, v in notes.labels.items()}
    report = adapter.evaluate(media, labels, train, heldout)
    assert report["generated"]["pitch_accuracy"] == report["reference"]["pitch_accuracy"] == 1.0
    assert report["generated"]["frechet_distance"] < 1e-6
    shifted = {**labels, "pitch": (labels["pitch"] + 1) % 24}
    wrong = adapter.evaluate(media, shifted, train, heldout)["generated"]
    assert wrong["pitch_accuracy"] == 0.0 and wrong["median_cents"] > 90
    silence = adapter.evaluate(torch.zeros_like(media), labels, train, heldout)["generated"]
    assert silence["frechet_distance"] > 100 * report["reference"]["frechet_distance"]


def test_bad_options_and_sources_are_named():
    with pytest.raises(ValueError, match="tokenizer"):
        build_adapter("audio", tokenizer="codec")
    with pytest.raises(ValueError, match="n_mels 128 must be divisible"):
        build_adapter("audio", patch_size=[24, 4])
    with pytest.raises(ValueError, match="16 kHz"):
        build_adapter("audio", sample_rate=22050, n_mels=64).dataset("notes", "train")
    with pytest.raises(KeyError, match="notes"):
        build_adapter("audio").dataset("birdsong", "train")
    with pytest.raises(ValueError, match=r"\[B, C=1, S=16000\]"):
        build_adapter("audio").encode(torch.zeros(2, 16000))


def test_harmonic_to_noise_ratio_rewards_clean_tones_and_hears_a_noise_floor():
    t = torch.arange(RATE) / RATE
    tone = sum(0.5**k * torch.sin(2 * math.pi * 220 * k * t) for k in range(1, 6))[None]  # 5 harmonics
    f0 = torch.tensor([220.0])
    g = torch.Generator().manual_seed(0)
    clean, quiet, loud = (
        harmonic_to_noise_db(tone + level * torch.randn(tone.shape, generator=g), RATE, f0).item()
        for level in (0.0, 0.003, 0.03)
    )
    assert clean > 60 and clean > quiet > loud  # 10x the noise amplitude: about 20 dB lower
    assert 15 < quiet - loud < 25
    assert harmonic_to_noise_db(torch.randn(1, RATE, generator=g), RATE, f0).item() < -5  # noise: mostly off
    assert math.isnan(harmonic_to_noise_db(tone, RATE, torch.tensor([float("nan")])).item())
