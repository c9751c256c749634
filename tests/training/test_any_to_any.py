"""The any-to-any recipe: digit images joined with the notes their digits map to (data.join), captions
stating both, six tasks between text, image and sound; every direction judged, and the CLI going from any
medium to any other."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from sklearn.datasets import load_digits

from mmdit.cli import main
from mmdit.recipe import load_recipe
from mmdit.training import build as run_builder
from mmdit.training.joined import JoinedDataset
from modalities.audio.datasets import NotesDataset
from modalities.common.digits import DigitsDataset
from modalities.common.folders import MediaFolder

RECIPE = "unified-digits-notes"
TINY = [
    "model.width=32",
    "model.heads=2",
    "model.joint_depth=1",
    "model.single_depth=1",
    "data.batch_size=8",
    "optimizer.warmup_steps=2",
]
MATCH = {"0": "C3", "1": "D3", "2": "E3", "3": "F3", "4": "G3", "5": "A3", "6": "B3", "7": "C4", "8": "D4",
         "9": "E4"}  # fmt: skip


def build(*overrides: str):
    return run_builder.build(load_recipe(RECIPE, [*TINY, *overrides]))


def test_joined_items_pair_each_digit_with_a_note_of_its_pitch():
    data, _ = build()
    pitches = data.train.classes["pitch"]
    for i in range(0, len(data.train), 97):
        item = data.train[i]
        digit = data.train.classes["digit"][item["labels"]["digit"]]
        assert pitches[item["labels"]["pitch"]] == MATCH[digit]
        assert item["media"]["audio"].shape == (1, 16000) and item["media"]["image"].shape == (1, 8, 8)
        assert item["numbers"] == {"seconds": 1.0}
    # held-out partners are fixed, so evaluations repeat
    assert torch.equal(data.heldout[5]["media"]["audio"], data.heldout[5]["media"]["audio"])


def test_join_errors_name_what_is_missing():
    digits, notes = DigitsDataset("train"), NotesDataset("train", variants=2, heldout=1)
    short = {k: v for k, v in MATCH.items() if k != "9"}
    options = dict(key="digit", to="pitch", split="train")
    with pytest.raises(KeyError, match=r"match has no entry for the digit classes \['9'\]"):
        JoinedDataset(digits, "image", notes, "audio", match=short, **options)
    with pytest.raises(KeyError, match=r"maps to \['H9'\], which are not pitch classes"):
        JoinedDataset(digits, "image", notes, "audio", match={**MATCH, "9": "H9"}, **options)
    with pytest.raises(ValueError, match=r"both datasets have the labels \['digit'\]"):
        JoinedDataset(digits, "image", DigitsDataset("train"), "other", match=MATCH, **options)


def test_a_join_indexes_a_folder_by_its_labels_without_reading_its_files(tmp_path):
    """A folder's items are paired by their sub-folder names alone (`item_labels`): joining reads no file,
    and gives the same partners as reading every item does."""
    for i, note in enumerate(["C3", "D3", "C3"]):
        (tmp_path / note).mkdir(exist_ok=True)
        (tmp_path / note / f"{i}.wav").write_bytes(b"")  # unreadable: a read would fail
    folder = MediaFolder(
        tmp_path, "train", (".wav",), read=None, kind="audio", heldout_fraction=0.0, label="pitch"
    )
    digits = DigitsDataset("train")
    options = dict(key="digit", to="pitch", split="train")
    joined = JoinedDataset(
        digits, "image", folder, "audio", match=dict.fromkeys(MATCH, "C3") | {"1": "D3"}, **options
    )
    c3 = [j for j in range(len(folder)) if folder.classes["pitch"][folder.item_labels(j)["pitch"]] == "C3"]
    assert joined.partners[0] == c3 and len(c3) == 2

    class ItemsOnly(torch.utils.data.Dataset):  # no item_labels: the join reads each item's labels
        classes = folder.classes

        def __len__(self):
            return len(folder)

        def __getitem__(self, j):
            return {"media": None, "labels": folder.item_labels(j)}

    read = JoinedDataset(
        digits, "image", ItemsOnly(), "audio", match=dict.fromkeys(MATCH, "C3") | {"1": "D3"}, **options
    )
    assert read.partners == joined.partners


def test_captions_asked_for_by_label_state_the_matched_pitch():
    _, module = build()
    labels = {"digit": torch.tensor([7, 2]), "pitch": torch.tensor([0, 0]), "timbre": torch.tensor([0, 1])}
    assert module.prompts_for(labels, "heldout") == ["a drawing of a seven and C4", "two heard as E3"]
    assert module.adapters["text"].caption_keys() == ["digit", "pitch"]


def test_a_task_leaves_the_streams_it_does_not_name_uncomputed(monkeypatch):
    data, module = build()
    batch = next(iter(data.train_dataloader()))

    def refuse(*args, **kwargs):
        raise AssertionError("the audio stream was encoded for a task without it")

    monkeypatch.setattr(module.adapters["audio"], "encode", refuse)
    draw = module.task("draw")
    assert set(module.task_losses(batch, draw, drop=0.1)) == {"diffusion"}
    assert set(module.task_losses(batch, module.task("describe_image"), drop=0.0)) == {"text"}
    with pytest.raises(AssertionError, match="the audio stream was encoded"):
        module.task_losses(batch, module.task("image_to_sound"), drop=0.0)


def test_generation_picks_the_task_by_what_it_is_given():
    _, module = build()
    assert module.task_making("audio").name == "play"
    assert module.task_making("audio", "image").name == "image_to_sound"
    assert module.task_making("image", "audio").name == "sound_to_image"
    with pytest.raises(KeyError, match="no task of this model generates stream 'audio' from stream 'audio'"):
        module.task_making("audio", "audio")
    images = torch.rand(2, 1, 8, 8)
    made = module.generate(2, given={"image": images}, task="image_to_sound", steps=1)
    assert set(made) == {"audio"} and made["audio"].shape == (2, 1, 16000)
    assert module.describing_task("audio").name == "describe_sound"


def test_any_to_any_fit_eval_and_the_cli_between_media(tmp_path, capsys):
    run = tmp_path / "run"
    # fmt: off
    short = ["trainer.max_steps=6", "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
             "sample.steps=2", "sample.grid=4", "eval.samples=6", "trainer.enable_progress_bar=false"]
    # fmt: on
    assert main(["fit", RECIPE, *TINY, *short, f"run_dir={run}"]) == 0
    assert (run / "samples_image.png").is_file() and (run / "samples_audio.png").is_file()
    report = json.loads((run / "eval.json").read_text())
    directions = {name: task["direction"] for name, task in report["tasks"].items()}
    assert directions == {
        "draw": "text -> image",
        "describe_image": "image -> text",
        "play": "text -> audio",
        "describe_sound": "audio -> text",
        "image_to_sound": "image -> audio",
        "sound_to_image": "audio -> image",
    }
    assert report["tasks"]["describe_sound"]["reference"] == {
        "named_pitch": 1.0,
        "understanding_accuracy": 1.0,
    }
    assert report["tasks"]["image_to_sound"]["reference"]["pitch_accuracy"] == 1.0
    assert {"accuracy", "understanding_accuracy"} <= set(report["generated"])

    weights = str(run / "weights.safetensors")
    steps = ["--steps", "1", "--n", "2"]
    out = tmp_path / "played"
    assert (
        main(["sample", weights, "--prompt", "seven heard as C4", "--to", "audio", *steps, "--out", str(out)])
        == 0
    )
    assert len(list(out.glob("audio_seven-heard-as-c4_0*.wav"))) == 2 and not list(out.glob("image_*"))
    digit = tmp_path / "seven.png"
    Image.fromarray((load_digits().images[7] / 16 * 255).astype(np.uint8)).save(digit)
    out = tmp_path / "heard"
    assert main(["sample", weights, "--from", str(digit), "--to", "audio", *steps, "--out", str(out)]) == 0
    assert len(list(out.glob("audio_from-seven_0*.wav"))) == 2
    note = tmp_path / "note.wav"
    soundfile.write(note, NotesDataset("heldout", variants=2, heldout=1)[0]["media"][0].numpy(), 16000)
    out = tmp_path / "drawn"
    assert main(["sample", weights, "--from", str(note), "--to", "image", *steps, "--out", str(out)]) == 0
    assert len(list(out.glob("image_from-note_0*.png"))) == 2
    capsys.readouterr()
    assert main(["describe", weights, str(note), str(digit)]) == 2  # one medium per call
    assert "describe reads files of one medium" in capsys.readouterr().err
    assert main(["describe", weights, str(note)]) == 0
    assert capsys.readouterr().out.startswith(f"{note}\t")
    assert main(["sample", weights, "--from", str(note), "--to", "audio", *steps]) == 2
    assert "this model makes 'audio' from files of stream(s) {'image'" in capsys.readouterr().err


def test_the_python_example_composes_the_same_six_directions():
    example = runpy.run_path(str(Path(__file__).parents[2] / "examples" / "compose_any_to_any.py"))
    data, module = run_builder.build(load_recipe(example["recipe_for"](2), TINY))
    roles = {t.name: dict(t.roles) for t in module.tasks}
    assert roles["text_to_image"] == {"image": "generate", "text": "condition"}
    assert roles["image_to_text"] == {"image": "understand", "text": "generate"}
    assert roles["audio_to_image"] == {"image": "generate", "audio": "condition"}
    assert len(roles) == 6 and module.task_making("audio", "image").name == "image_to_audio"
    assert data.train[0]["media"].keys() == {"image", "audio", "text"}


def test_placed_digits_sit_where_their_position_says():
    from modalities.common.digits import POSITIONS, DigitsDataset, PlacedDigitsDataset, placed_corner

    placed, plain = PlacedDigitsDataset("heldout"), DigitsDataset("heldout")
    seen = set()
    for i in range(40):
        item = placed[i]
        row, column = placed_corner(POSITIONS[item["labels"]["position"]])
        box = item["media"][:, row : row + 8, column : column + 8]
        assert torch.equal(box, plain[i]["media"]) and item["media"].sum() == box.sum()
        seen.add(item["labels"]["position"])
    assert seen == set(range(4))


def test_two_properties_are_drawn_and_described_and_each_is_scored():
    data, module = run_builder.build(load_recipe("unified-placed-digits", TINY))
    assert module.adapters["text"].caption_keys() == ["digit", "position"]
    adapter = module.adapters["image"]
    train, heldout = (adapter.dataset("placed-digits", s) for s in ("train", "heldout"))
    real = torch.stack([heldout[i]["media"] for i in range(len(heldout))])
    labels = {
        k: torch.tensor([heldout[i]["labels"][k] for i in range(len(heldout))]) for k in heldout.classes
    }
    report = adapter.evaluate(real, labels, train, heldout)
    assert report["generated"]["accuracy_position"] == 1.0 and report["generated"]["accuracy"] > 0.9
    moved = {**labels, "position": (labels["position"] + 1) % 4}  # asked for elsewhere: judged wrong
    assert adapter.evaluate(real, moved, train, heldout)["generated"]["accuracy_position"] == 0.0
    prompts = module.prompts_for({"digit": torch.tensor([3]), "position": torch.tensor([2])}, "heldout")
    assert prompts == ["a drawing of a three at top"]
