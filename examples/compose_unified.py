"""Compose a unified model in Python, no YAML: an image stream and a text stream, two tasks, one backbone.

python examples/compose_unified.py [MAX_STEPS]    # default 600: a quick look; the recipe trains 3000

The dict below is the whole model: streams (which adapters), tasks (which roles each stream plays), the
backbone's size. `fit` trains it with Lightning; the same weights then draw from a prompt and describe.
"""

import sys

import torch

from mmdit.recipe import load_recipe
from mmdit.training.build import build, load_module
from mmdit.training.train import fit

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 600
numbers = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
recipe = load_recipe(
    {
        "name": "compose-unified",
        "run_dir": "runs/compose-unified",
        "streams": {
            "image": {"modality": "image", "options": {"channels": 1, "patch_size": 2, "size": [8, 8]}},
            "text": {
                "modality": "text",
                "options": {
                    "max_length": 24,
                    "templates": {
                        "train": ["a handwritten {digit}", "the digit {digit_word}"],
                        "heldout": ["this is a {digit_word}"],
                    },  # fmt: skip
                    "words": {"digit": numbers},
                },
            },
        },
        "data": {"source": "digits", "stream": "image", "batch_size": 128},
        # Text -> image (the image is noised, the text a clean condition) and image -> text.
        "tasks": {
            "draw": {"weight": 0.5, "roles": {"text": "condition", "image": "generate"}},
            "describe": {"weight": 0.5, "roles": {"image": "understand", "text": "generate"}},
        },
        "model": {"joint_depth": 2, "single_depth": 2, "width": 128, "heads": 4},
        "optimizer": {"lr": 1e-3, "warmup_steps": min(200, steps // 5), "decay": "cosine"},
        "sample": {"steps": 30, "sampler": "heun", "cfg": 2.0, "grid": 40},
        "trainer": {
            "max_steps": steps,
            "val_check_interval": min(500, steps),
            "check_val_every_n_epoch": None,
        },
    }
)
datamodule, module = build(recipe)
assert module.describes and module.prompt_stream == "text"  # the tasks: it draws from text and writes it
parameters = sum(p.numel() for p in module.model.parameters())
print(f"backbone: {parameters:,} parameters for streams {list(module.adapters)}")

run_dir = fit(recipe)
module = load_module(run_dir / "weights.safetensors")
images = module.generate(8, prompts=["a handwritten seven"] * 8, seed=1)["image"]
print(
    f"8 drawings of 'a handwritten seven': {module.adapters['image'].preview(images, run_dir / 'sevens.png')}"
)
print("the model describes them:", module.describe(images))
print(
    "and real digits 0-4:",
    module.describe(torch.stack([datamodule.heldout[i]["media"]["image"] for i in range(5)])),
)
