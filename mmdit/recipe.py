"""Recipes: one YAML file holds everything a run needs; `key=value` arguments override it.

The schema below is the list of valid keys: a key it does not name is an error that names the key and lists
its valid siblings. `trainer` passes straight to `lightning.Trainer`, so its keys are Trainer's arguments.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import lightning
import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from mmdit.annotations import misfits
from mmdit.errors import UserError
from mmdit.weights_files import read_safetensors_metadata

BUNDLED = files("mmdit.recipes")
"""The repository's top-level recipes/ folder, installed as the package data `mmdit.recipes` (setup.py)."""


@dataclass
class StreamConfig:
    modality: str = MISSING
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class JoinConfig:
    """Another media stream's dataset paired with the data stream's items (mmdit.training.joined): an item
    whose label `key` is class c gets a partner from `source` whose label `to` is class match[c]."""

    source: Any = MISSING  # a bundled dataset's name, or {folder: PATH}, read by the joined stream's adapter
    key: str = MISSING  # a label of the data stream's items
    to: str = MISSING  # a label of the joined stream's items
    match: dict[str, str] = MISSING  # {class of key: class of to}, one entry per class of key


@dataclass
class DataConfig:
    source: Any = MISSING  # a bundled dataset's name, or {folder: PATH}
    stream: str | None = None  # which stream the dataset's media feed (default: the first)
    batch_size: int = 64
    split_seed: int = 0  # draws the train / held-out split and generated data; apart from `seed`, so the
    # held-out items stay held out whatever the training seed
    num_workers: int = 0
    cache: bool = False  # train on the tokens `mmdit prepare` encoded once (mmdit.training.token_cache)
    packing: bool = False  # packed rows instead of padded items (one-stream recipes; mmdit.model.packing)
    join: dict[str, JoinConfig] = field(default_factory=dict)  # {stream: JoinConfig}: a second medium


@dataclass
class ConditioningConfig:
    labels: list[str] = field(default_factory=list)  # dataset label keys the model is conditioned on
    dropout: float = 0.1  # share of training items whose labels are dropped (classifier-free guidance)
    numbers: list[str] = field(default_factory=list)  # dataset numbers (e.g. seconds) embedded, never dropped


@dataclass
class TaskConfig:
    """One task of a unified recipe: how often it is drawn and each taking-part stream's role
    (condition, understand or generate; see mmdit.model.masks)."""

    weight: float = 1.0
    roles: dict[str, str] = MISSING


@dataclass
class ModelConfig:
    preset: str | None = None  # a name from mmdit.model.presets; the keys below override it
    joint_depth: int | None = None
    single_depth: int | None = None
    width: int | None = None
    heads: int | None = None
    mlp_ratio: float = 4.0
    qk_norm: bool = True
    label_init_std: float = 1.0  # nn.Embedding's N(0, 1): labels condition from the start; DiT's is 0.02
    rope_theta: float = 10000.0  # rotary base; a grid of a few tokens per axis resolves offsets better lower
    pool: str = "none"  # clean inputs' masked mean into the adaLN vector too: none, embedded, joint (MMDiT)
    attention: str = "full"  # "full" joint attention, or "factorised" spatial / temporal blocks (video)
    time_frequency_shift: float = 0.0  # 1 for checkpoints converted from diffusers' DiT port
    mlp_norm_eps: float = 1e-6  # 1e-5 for checkpoints converted from diffusers' DiT port
    mlp_activation: str = "gelu_tanh"  # DiT's; "gelu" (exact): the same curve within 5e-4, faster on CPUs
    checkpointing: bool = False  # recompute block activations in the backward pass (memory for compute)
    compile: bool = False  # torch.compile each transformer block


@dataclass
class FlowObjective:
    """`objective.type: flow`, rectified flow (mmdit.objectives.flow)."""

    type: str = "flow"
    prediction: str = "velocity"  # or x0 (the clean data, JiT's x-prediction with a v-loss)
    time_sampling: str = "logit_normal"  # or uniform
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0  # SD3's resolution shift of training and sampling times
    diffusion_weight: float = 1.0  # loss = discrete-stream losses + diffusion_weight * diffusion losses


@dataclass
class GaussianObjective:
    """`objective.type: gaussian`, DDPM as DiT-family checkpoints were trained (mmdit.objectives.gaussian)."""

    type: str = "gaussian"
    prediction: str = "epsilon"  # or v, x0
    steps: int = 1000  # training steps T (linear betas 1e-4 -> 0.02, scaled by 1000 / T)
    learn_sigma: bool = False  # also predict the variance (IDDPM's learned range, hybrid loss)
    diffusion_weight: float = 1.0  # loss = discrete-stream losses + diffusion_weight * diffusion losses


OBJECTIVE_SCHEMAS = {"flow": FlowObjective, "gaussian": GaussianObjective}


@dataclass
class OptimizerConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    decay: str = "constant"  # after warm-up: "constant", or "cosine" down to 0 at trainer.max_steps
    fused: bool = True  # torch's single-kernel AdamW where the device has it; false: its foreach AdamW


@dataclass
class EmaConfig:
    enabled: bool = True
    decay: float = 0.999


@dataclass
class SampleConfig:
    steps: int = 50
    sampler: str = "heun"  # flow: euler, heun or dpmpp_2m; gaussian: ddpm or ddim
    schedule: str = "uniform"  # the steps' times; flow also: quantile (of training's), karras (EDM's)
    cfg: float = 1.0
    guidance_interval: list[float] = field(default_factory=lambda: [0.0, 1.0])  # guide for lo <= t <= hi
    cfg_schedule: str = "constant"  # or linear: guidance strength rising from 0 at noise (same mean)
    guided_channels: int | None = (
        None  # guide only each patch's first C channels (DiT's released sampling: 3)
    )
    grid: int = 64  # items in the preview grid drawn at each validation


@dataclass
class AutoencoderSection:
    """`autoencoder:` makes a recipe a codec stage: `mmdit fit` trains a codec of `kind` on the data
    stream's media (mmdit.training.codec_module) instead of a diffusion model, and exports codec.safetensors
    for an adapter's `codec` option. Kind `conv` (a convolutional VAE) reads the keys from latent_channels to
    stft; another kind (mmdit.codecs.kinds) reads its config keys from `options.<kind>`."""

    kind: str = "conv"  # or a kind a modality registers (audio: harmonic)
    options: dict[str, Any] = field(default_factory=dict)  # {kind: {key: value}}, other kinds' configs
    latent_channels: int = 16
    patch: int = 1  # cells per axis folded into channels first (waveforms: 8-16, so convolutions are wide)
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # channels per level
    strides: list[int] = field(default_factory=lambda: [4, 4, 4])  # downsampling between levels (2, 4, 8)
    blocks: int = 1  # residual blocks per level
    kernel: int = 3  # odd; waveforms like 7
    norm: str = "group"  # or none: a pure convolution, whose crops see what whole items see (see crop)
    stft: list[int] | None = None  # waveforms: [n_fft, hop], convolutions over STFT frames (Vocos-like)
    kl_weight: float = 1e-4  # weight of the KL per latent element against the reconstruction loss
    crop: list[int] | None = None  # train on random crops of this extent per axis (convolutions do not
    # care where they are; a quarter of a clip costs a quarter); validation sees whole items. With
    # GroupNorm a crop's statistics are not a whole item's: mesh grids lost 4x in validation (norm: none)
    statistics_items: int = 256  # train items whose latents measure the export's shift and scale


@dataclass
class CheckpointConfig:
    every_n_steps: int = 1000  # checkpoints/last.ckpt every N optimizer steps (and after the last step)


@dataclass
class DistillSection:
    """`distill:` makes a recipe a distillation: `mmdit fit` trains a student, initialised from the teacher's
    weights, to sample in the `sample` section's few Euler steps without guidance, along the guided
    teacher's ODE trajectories (mmdit.training.distill_module). The recipe takes its streams, data,
    conditioning, tasks, model, objective and eval sections from the teacher's (TEACHER_SECTIONS); keys
    it writes in them override the teacher's."""

    teacher: str = MISSING  # the teacher's export (.safetensors, written by `mmdit fit` / `mmdit export`)
    teacher_sample: dict[str, Any] = field(default_factory=lambda: {"steps": 16, "sampler": "dpmpp_2m"})
    # ^ sample keys that replace the teacher recipe's own while it draws trajectories (cfg, schedule, ...)
    trajectories: int = 4096  # teacher trajectories drawn once before training, from train items' labels


@dataclass
class EvalConfig:
    samples: int | None = None  # items `mmdit eval` generates and judges; default one per held-out item,
    # more cycle through the held-out items' labels again


@dataclass
class Recipe:
    name: str = MISSING
    description: str = ""
    seed: int = 0
    run_dir: str | None = None  # default runs/<name>/<timestamp>
    streams: dict[str, StreamConfig] = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    tasks: dict[str, TaskConfig] = field(default_factory=dict)  # several: a unified recipe
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: Any = field(default_factory=lambda: {"type": "flow"})  # checked by its type's schema
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    autoencoder: AutoencoderSection | None = None  # set: the recipe trains a codec, not a diffusion model
    distill: DistillSection | None = None  # set: the recipe distils a teacher export into a few-step student
    trainer: dict[str, Any] = field(default_factory=dict)


TEACHER_SECTIONS = ("streams", "data", "conditioning", "tasks", "model", "objective", "eval")
"""What a distillation recipe takes from its teacher's recipe: the student is the teacher's network (it
starts from its weights), conditioned on the same data's labels."""


TEACHER_SAMPLE_KEYS = ("steps", "sampler", "schedule", "cfg", "guidance_interval", "cfg_schedule")
"""The `sample` keys `distill.teacher_sample` may set for the teacher's trajectories."""


def _bundled_files() -> list[Traversable]:
    return sorted((f for f in BUNDLED.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)


def available() -> dict[str, str]:
    """Bundled recipes: name -> one-line description."""
    return {
        f.name.removesuffix(".yaml"): OmegaConf.create(f.read_text()).get("description", "")
        for f in _bundled_files()
    }


def recipe_file(name_or_path: str) -> Path | Traversable:
    """A recipe's YAML file: a path on disk, or a bundled recipe's name (also when a folder of that name,
    such as a run directory, is in the way)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {path} does not exist or is not a file")
        return path
    bundled = BUNDLED.joinpath(f"{name_or_path}.yaml")
    if not bundled.is_file():
        raise KeyError(f"unknown recipe {name_or_path!r}; bundled recipes: {', '.join(available())}")
    return bundled


def _valid_keys(schema: Any, full_key: str) -> list[str]:
    node = schema
    for part in full_key.split(".")[:-1]:
        node = node[part] if isinstance(node, DictConfig) and part in node else None
        if node is None:
            return []
    return list(node.keys()) if isinstance(node, DictConfig) else []


def load_recipe(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> DictConfig:
    """Read a recipe (a bundled name, a YAML path, or a dict written in Python), apply `key=value`
    overrides, and check every key. Returns a read-only DictConfig with the schema's defaults filled in."""
    schema = OmegaConf.structured(Recipe)
    if isinstance(source, Mapping):
        path, content = "recipe", OmegaConf.create(dict(source))
    else:
        path = recipe_file(str(source))
        content = _read_yaml(path)
    for bad in (o for o in overrides if "=" not in o):
        raise UserError(f"override {bad!r} is not key=value")
    given = _parse_overrides(overrides)
    teacher = _teacher_sections(path, OmegaConf.merge(content, given))
    try:
        recipe = OmegaConf.merge(schema, teacher, content, given)
    except (ConfigKeyError, ConfigAttributeError) as err:
        key = err.full_key or str(err)
        raise KeyError(
            f"{path}: unknown recipe key {key!r}; valid here: {_valid_keys(schema, key)}"
        ) from None
    except ValidationError as err:
        reason = str(err.msg).splitlines()[0]
        raise ValueError(f"{path}: bad value for {err.full_key!r}: {reason}") from None
    recipe.objective = _objective_section(path, content.get("objective"), recipe.objective)
    missing = sorted(OmegaConf.missing_keys(recipe))
    if missing:
        raise KeyError(f"{path}: recipe needs {missing}")
    trainer_args = set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self"}
    unknown = sorted(set(recipe.trainer) - trainer_args)
    if unknown:
        raise KeyError(f"{path}: trainer keys {unknown} are not arguments of lightning.Trainer")
    _check_trainer(path, OmegaConf.to_container(recipe.trainer, resolve=True))
    _check_ranges(path, recipe)
    OmegaConf.set_readonly(recipe, True)
    return recipe


def _read_yaml(path: Path | Traversable) -> DictConfig:
    """A recipe file's mapping; a YAML syntax error names the file, line and column."""
    try:
        content = OmegaConf.create(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{where}: YAML syntax error: {problem}") from None
    if not isinstance(content, DictConfig):
        raise UserError(f"{path}: a recipe is a mapping of sections (name:, streams:, ...), not a list")
    return content


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """`key=value` overrides as one config; a value YAML cannot read names its override."""
    parsed = OmegaConf.create()
    for override in overrides:
        try:
            parsed = OmegaConf.merge(parsed, OmegaConf.from_dotlist([override]))
        except (yaml.YAMLError, OmegaConfBaseException) as err:
            reason = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise UserError(f"override {override!r}: cannot read its value: {reason}") from None
    return parsed


RANGES = {
    "data.batch_size": (1, None),
    "data.num_workers": (0, None),
    "conditioning.dropout": (0, 1),
    "model.joint_depth": (0, None),
    "model.single_depth": (0, None),
    "model.width": (1, None),
    "model.heads": (1, None),
    "model.mlp_ratio": (0, None),
    "optimizer.lr": (0, None),
    "optimizer.weight_decay": (0, None),
    "optimizer.warmup_steps": (0, None),
    "sample.steps": (1, None),
    "sample.cfg": (0, None),
    "sample.grid": (1, None),
    "eval.samples": (1, None),
}
"""Closed [least, most] (None: unbounded) of the schema's numbers whose type alone lets nonsense through;
`optimizer.lr` must also be above 0."""


def _check_ranges(path: Any, recipe: DictConfig) -> None:
    """Every number of the recipe finite, and the numbers of `RANGES` within theirs, named by key."""
    for key, value in _numbers(OmegaConf.to_container(recipe, resolve=True), ""):
        if not math.isfinite(value):
            raise UserError(f"{path}: {key} must be a finite number, got {value}")
    for key, (least, most) in RANGES.items():
        value = OmegaConf.select(recipe, key)
        if value is None:
            continue
        if value < least or (most is not None and value > most) or (key == "optimizer.lr" and value == 0):
            bound = f"in [{least}, {most}]" if most is not None else f"at least {least}"
            raise UserError(
                f"{path}: {key} must be {'above 0' if key == 'optimizer.lr' else bound}, got {value}"
            )


def _numbers(node: Any, prefix: str):
    """(dotted key, value) of every float in a plain recipe container."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _numbers(v, f"{prefix}[{i}]")
    elif isinstance(node, float):
        yield prefix, node


AT_LEAST = {
    "max_steps": 1,
    "log_every_n_steps": 1,
    "accumulate_grad_batches": 1,
    "check_val_every_n_epoch": 1,
    "gradient_clip_val": 0,
}
"""Least values of trainer counts Lightning would take but a run cannot use (max_steps 0 trains nothing;
-1, Lightning's "no limit", leaves a cosine decay without an end)."""


def _check_trainer(path: Any, trainer: Mapping[str, Any]) -> None:
    """`trainer` values of the type lightning.Trainer annotates, and counts within `AT_LEAST`."""
    wrong = misfits(trainer, lightning.Trainer.__init__)
    if wrong:
        raise UserError(f"{path}: bad value for trainer.{wrong[0]}")
    for key, least in AT_LEAST.items():
        value = trainer.get(key)
        if isinstance(value, int | float) and not (math.isfinite(value) and value >= least):
            raise UserError(f"{path}: trainer.{key} must be at least {least}, got {value}")
    interval = trainer.get("val_check_interval")
    if isinstance(interval, int | float) and not interval > 0:
        raise UserError(f"{path}: trainer.val_check_interval must be above 0, got {interval}")


def _teacher_sections(path: Any, written: DictConfig) -> DictConfig:
    """The TEACHER_SECTIONS of the recipe in `distill.teacher`'s export ({} for a recipe without a
    distill section), which the distillation recipe's own keys then override."""
    section = written.get("distill")
    if section is None:
        return OmegaConf.create({})
    teacher = section.get("teacher") if OmegaConf.is_dict(section) else None
    if teacher is None or OmegaConf.is_missing(section, "teacher"):
        raise KeyError(
            f"{path}: distill.teacher is not set; give the teacher's export, e.g. "
            "distill.teacher=runs/image-digits/RUN/weights.safetensors"
        )
    unknown = sorted(set(section.get("teacher_sample") or {}) - set(TEACHER_SAMPLE_KEYS))
    if unknown:
        raise KeyError(
            f"{path}: distill.teacher_sample keys {unknown} are not teacher sampling keys; valid: "
            f"{list(TEACHER_SAMPLE_KEYS)}"
        )
    stored = exported_recipe(teacher, "distill.teacher")
    return OmegaConf.create({k: stored[k] for k in TEACHER_SECTIONS})


def exported_recipe(path: str | Path, key: str = "weights") -> DictConfig:
    """The recipe in the metadata of an mmdit export (`.safetensors`); `key` names what gave the path in
    errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key} {path} does not exist")
    if path.suffix != ".safetensors":
        raise ValueError(f"{key} {path}: expected a .safetensors export (`mmdit export` writes one)")
    meta = read_safetensors_metadata(path, key)  # a truncated file is an error naming it
    if "recipe" not in meta:
        raise ValueError(f"{key} {path}: no mmdit recipe in its metadata; was it written by `mmdit export`?")
    return from_yaml(meta["recipe"])


def _objective_section(path: Any, written: Any, merged: DictConfig) -> DictConfig:
    """The `objective` section checked against its type's schema, defaults filled in. An override that
    changes the type (`objective.type=gaussian` on a flow recipe) starts the section afresh from that type:
    the file's keys were written for the other one."""
    kind = merged.get("type", "flow")
    if kind not in OBJECTIVE_SCHEMAS:
        raise ValueError(f"{path}: objective.type must be one of {list(OBJECTIVE_SCHEMAS)}, got {kind!r}")
    file_kind = (written or {}).get("type", "flow")
    given = {k: v for k, v in merged.items() if file_kind == kind or k not in (written or {})}
    try:
        return OmegaConf.merge(OmegaConf.structured(OBJECTIVE_SCHEMAS[kind]), {**given, "type": kind})
    except (ConfigKeyError, ConfigAttributeError) as err:
        valid = list(OmegaConf.structured(OBJECTIVE_SCHEMAS[kind]).keys())
        raise KeyError(
            f"{path}: objective key {err.full_key or str(err)!r} is not a key of a {kind} objective; "
            f"valid: {valid}"
        ) from None
    except ValidationError as err:
        raise ValueError(
            f"{path}: bad value for objective.{err.full_key}: {str(err.msg).splitlines()[0]}"
        ) from None


def to_yaml(recipe: DictConfig) -> str:
    return OmegaConf.to_yaml(recipe, resolve=True)


def from_yaml(text: str) -> DictConfig:
    """A recipe stored with a run or in a weights file (already resolved and checked)."""
    stored = OmegaConf.create(text)
    recipe = OmegaConf.merge(OmegaConf.structured(Recipe), stored)
    if "pool" not in (stored.get("model") or {}):  # stored before model.pool: those models pooled nothing
        recipe.model.pool = "none"
    # Recipes stored before the objective section was tagged hold every type's keys: keep this type's.
    schema = OmegaConf.structured(OBJECTIVE_SCHEMAS[recipe.objective.get("type", "flow")])
    recipe.objective = OmegaConf.merge(
        schema, {k: v for k, v in recipe.objective.items() if k in schema and v is not None}
    )
    OmegaConf.set_readonly(recipe, True)
    return recipe
