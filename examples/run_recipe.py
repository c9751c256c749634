"""Run a bundled recipe from Python with `key=value` overrides, then sample from the weights it exported.

python examples/run_recipe.py [MAX_STEPS]    # default 500: a quick look (minutes on a CPU)
"""

import json
import sys

import torch

from mmdit.recipe import load_recipe
from mmdit.training.build import load_module
from mmdit.training.train import fit

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 500
# A shorter run than the recipe's: warm up and validate within it.
overrides = [f"trainer.max_steps={steps}", f"optimizer.warmup_steps={min(200, steps // 5)}"]
overrides += [f"trainer.val_check_interval={min(500, steps)}"]
run_dir = fit(load_recipe("image-digits", [*overrides, "run_dir=runs/digits-from-python"]))
print(json.loads((run_dir / "eval.json").read_text())["generated"])

module = load_module(run_dir / "weights.safetensors")
seven = module.class_index("digit", "7")
images = module.generate(8, {"digit": torch.full((8,), seven)}, seed=1)["image"]
adapter = module.adapters["image"]
for i, image in enumerate(images):
    adapter.save(image, run_dir / "sevens" / f"seven_{i}{adapter.file_suffix}")
print(f"8 sevens in {run_dir / 'sevens'}, all in one grid: {adapter.preview(images, run_dir / 'sevens.png')}")
