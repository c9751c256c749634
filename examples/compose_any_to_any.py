"""Compose an any-to-any model in Python, no YAML: image, audio and text streams, six tasks, one backbone.

python examples/compose_any_to_any.py [MAX_STEPS]    # default 1500: a quick look; the recipe trains 4000

The dict below is the whole model: streams (which adapters), data (digit images, each joined with a note
whose pitch its digit maps to), tasks (which role each stream plays in each), the backbone's size. `fit`
trains it with Lightning; the same weights then draw, play, describe, and turn a digit into its note.
"""

import sys

import torch

from mmdit.recipe import load_recipe
from mmdit.training.build import build, load_module
from mmdit.training.train import fit

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PITCHES = ["C3", "D3", "E3", "F3", "G3", "A3", "B3", "C4", "D4", "E4"]  # digit d -> PITCHES[d]
AUDIO = {"sample_rate": 16000, "seconds": 1.0, "tokenizer": "mel", "patch_size": 4, "f_max": 4000.0}
TEXT = {
    "max_length": 32,
    "templates": {"train": ["a {digit_word}, played as {pitch}", "digit {digit} at {pitch}"],
                  "heldout": ["{digit_word} heard as {pitch}"]},
    "words": {"digit": WORDS},
}  # fmt: skip


def roles(source: str, target: str) -> dict:
    """A task: `source` read clean (a caption conditions, media are understood when text is written)."""
    role = "understand" if target == "text" and source != "text" else "condition"
    return {"weight": 1.0, "roles": {source: role, target: "generate"}}


def recipe_for(steps: int) -> dict:
    pairs = [(a, b) for a in ("text", "image", "audio") for b in ("text", "image", "audio") if a != b]
    return {
        "name": "compose-any-to-any",
        "run_dir": "runs/compose-any-to-any",
        "streams": {
            "image": {"modality": "image", "options": {"channels": 1, "patch_size": 2, "size": [8, 8]}},
            "audio": {"modality": "audio", "options": AUDIO},
            "text": {"modality": "text", "options": TEXT},
        },
        "data": {
            "source": "digits",
            "stream": "image",
            "batch_size": 64,
            "join": {
                "audio": {
                    "source": "notes",
                    "key": "digit",
                    "to": "pitch",
                    "match": {str(d): p for d, p in enumerate(PITCHES)},
                }
            },
        },  # fmt: skip
        "tasks": {f"{a}_to_{b}": roles(a, b) for a, b in pairs},  # six directions
        "model": {"joint_depth": 2, "single_depth": 2, "width": 192, "heads": 4},
        "objective": {"shift": 2.0},
        "optimizer": {"lr": 1e-3, "warmup_steps": min(200, steps // 5), "decay": "cosine"},
        "sample": {"steps": 30, "sampler": "heun", "cfg": 2.0, "grid": 20},
        "eval": {"samples": 100},
        "trainer": {"max_steps": steps, "val_check_interval": steps, "check_val_every_n_epoch": None},
    }


if __name__ == "__main__":
    recipe = load_recipe(recipe_for(int(sys.argv[1]) if len(sys.argv) > 1 else 1500))
    datamodule, module = build(recipe)
    parameters = sum(p.numel() for p in module.model.parameters())
    print(f"{parameters:,} parameters; tasks {[t.name for t in module.tasks]}")
    module = load_module(fit(recipe) / "weights.safetensors")
    digits = torch.stack([datamodule.heldout[i]["media"]["image"] for i in range(4)])
    notes = module.generate(4, given={"image": digits}, task="image_to_audio", seed=1)["audio"]
    print("the notes of 4 real digits, described:", module.describe(notes, "audio"))
    print("those digits, described:", module.describe(digits, "image"))
    sevens = module.generate(4, prompts=["seven heard as C4"] * 4, task="text_to_image", seed=1)["image"]
    print("4 sevens drawn, described:", module.describe(sevens, "image"))
