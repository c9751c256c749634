"""The run builder: the one place in the core that turns a recipe's `modality:` names into adapters
(through `modalities.registry`) and hands them to the data and training modules. Everything else in
`mmdit` sees adapters only through `mmdit.contract`."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mmdit.annotations import misfits
from mmdit.contract import ModalityAdapter
from mmdit.errors import UserError
from mmdit.model.presets import preset
from mmdit.recipe import from_yaml
from mmdit.training.codec_module import CodecModule, codec_config
from mmdit.training.data import MediaDataModule, data_stream
from mmdit.training.distill_module import DistillModule
from mmdit.training.module import DiffusionModule
from mmdit.training.token_cache import CachedDataModule
from mmdit.training.trajectories import TrajectoryDataModule
from mmdit.weights_files import lightning_checkpoint, read_safetensors, state_dict_mismatch
from modalities.registry import ModalityEntry, adapter_class, build_adapter, catalogue


def build_adapters(recipe: DictConfig) -> dict[str, ModalityAdapter]:
    """{stream: adapter} in the recipe's order, each built from its `modality` and `options`. A DiT-style
    preset's patch size (DiT-S/2) reaches the data stream, whose adapter must take `patch_size`; a stream
    that sets another patch size is an error, since the preset's name would then lie."""
    adapters = {}
    patch = preset(recipe.model.preset).get("patch_size") if recipe.model.preset else None
    for name, spec in recipe.streams.items():
        options = OmegaConf.to_container(spec.options, resolve=True)
        wrong = misfits(options, adapter_class(spec.modality).__init__)
        if wrong:
            raise UserError(f"bad value for streams.{name}.options.{wrong[0]}")
        if patch is not None and name == data_stream(recipe):
            accepted = inspect.signature(adapter_class(spec.modality).__init__).parameters
            if "patch_size" not in accepted:
                raise ValueError(
                    f"model.preset {recipe.model.preset} sets a patch size; stream {name!r} has none"
                )
            if options.setdefault("patch_size", patch) != patch:
                raise ValueError(
                    f"model.preset {recipe.model.preset} means patch size {patch}, but stream {name!r} sets "
                    f"patch_size {options['patch_size']}: pick the preset of that patch size"
                )
        try:
            adapters[name] = build_adapter(spec.modality, **options)
        except ValueError as err:  # the adapter's own check of its options: say which stream's options
            raise UserError(f"streams.{name}.options: {err}") from err
    return adapters


def modalities() -> list[ModalityEntry]:
    """What `mmdit modalities` lists: every modality a recipe may name (built-in, registered, plugins)."""
    return catalogue()


def build_data(recipe: DictConfig, adapters: dict[str, ModalityAdapter]) -> MediaDataModule:
    """The recipe's train and held-out datasets, read by its data stream's adapter (adapters that encode
    costly media, such as meshes, fill their own caches here), or with `data.cache: true` the encoded tokens
    `mmdit prepare` cached (see mmdit.training.token_cache)."""
    data_module = CachedDataModule if recipe.data.cache else MediaDataModule
    return data_module(recipe, adapters)


def build(recipe: DictConfig) -> tuple[MediaDataModule, DiffusionModule | CodecModule]:
    """The data and training modules of a run: a diffusion model, with an `autoencoder:` section the
    codec of the data stream's media (sized by the data's first item), or with a `distill:` section a
    few-step student of the teacher export it names."""
    adapters = build_adapters(recipe)
    if recipe.distill is not None:
        return build_distillation(recipe, adapters)
    datamodule = build_data(recipe, adapters)
    if recipe.autoencoder is None:
        return datamodule, DiffusionModule(recipe, datamodule.classes, adapters)
    if len(adapters) != 1:
        raise ValueError(f"a codec recipe trains one stream's codec; this one has {list(adapters)}")
    item_shape = tuple(datamodule.train[0]["media"].shape)
    adapter = adapters[data_stream(recipe)]
    config = codec_config(recipe, item_shape, adapter)
    return datamodule, CodecModule(recipe, datamodule.classes, adapter, config)


def build_distillation(
    recipe: DictConfig, adapters: dict[str, ModalityAdapter]
) -> tuple[TrajectoryDataModule, DistillModule]:
    """The student (the teacher's network and weights, trained on the teacher's trajectories) and the
    data module that draws those trajectories."""
    if recipe.autoencoder is not None:
        raise ValueError(f"recipe {recipe.name!r} has both autoencoder and distill sections: pick one")
    teacher = load_module(recipe.distill.teacher)
    if teacher.objective.kind != "flow":
        raise ValueError(
            f"distill.teacher {recipe.distill.teacher}: a {teacher.objective.kind} objective; distillation "
            "follows the flow ODE"
        )
    student = DistillModule(recipe, teacher.classes, adapters)
    try:
        student.model.load_state_dict(teacher.model.state_dict())
    except RuntimeError as err:
        detail = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise ValueError(
            f"distill.teacher {recipe.distill.teacher}: its network does not fit the student's ({detail}); "
            "the student takes streams, model and conditioning from the teacher: leave them as its own"
        ) from None
    datamodule = TrajectoryDataModule(recipe, adapters, teacher, student.student_times())
    return datamodule, student


def load_module(path: str | Path, map_location: str = "cpu") -> DiffusionModule:
    """A trained module from an exported `.safetensors` (recipe and classes in its metadata) or a Lightning
    `.ckpt` (whose state holds the EMA weights when EMA was on). Both are read as tensors and plain data
    only (mmdit.weights_files): loading never runs code from the file. Every failure names the file."""
    path = Path(path)
    if path.suffix == ".ckpt":
        checkpoint = lightning_checkpoint(path, map_location)
        hparams = checkpoint["hyper_parameters"]
        module = _module(path, json.dumps(hparams["recipe"]), hparams.get("classes", {}))
        _load_weights(module, checkpoint["state_dict"], path)
        return module
    if path.suffix != ".safetensors":
        raise UserError(f"{path}: expected a .safetensors export or a Lightning .ckpt")
    tensors, meta = read_safetensors(path, map_location)
    if "backbone" in meta and "recipe" not in meta:
        raise UserError(
            f"{path} is a converted backbone without a recipe (SD3 needs text-encoder streams mmdit does "
            "not ship); load it with mmdit.convert.load_backbone"
        )
    if "recipe" not in meta or "classes" not in meta:
        raise UserError(f"{path}: no mmdit recipe in its metadata; was it written by `mmdit export`?")
    try:
        classes = json.loads(meta["classes"])
    except ValueError as err:
        raise UserError(f"{path}: its metadata's classes are not JSON: {err}") from None
    module = _module(path, meta["recipe"], classes)
    _load_weights(module.model, tensors, path)
    return module


def _module(path: Path, recipe_text: str, classes: dict) -> DiffusionModule:
    """The untrained module of a weights file's stored recipe; a recipe that does not load names the file."""
    try:
        recipe = from_yaml(recipe_text)
    except (OmegaConfBaseException, ValueError, KeyError) as err:
        raise UserError(f"{path}: the recipe stored in it is not a valid recipe: {err}") from None
    if recipe.autoencoder is not None:
        raise UserError(
            f"{path} is a codec stage's checkpoint (its recipe has autoencoder:); its export is the run's "
            "codec.safetensors, for a stream's codec option"
        )
    return DiffusionModule(recipe, classes, build_adapters(recipe))


def _load_weights(module: torch.nn.Module, state: dict, path: Path) -> None:
    """`module.load_state_dict(state)`, or an error naming the file and a few keys that do not fit."""
    mismatch = state_dict_mismatch(module.state_dict(), state)
    if mismatch:
        raise UserError(f"{path}: its weights do not fit the recipe stored with them: {mismatch}")
    module.load_state_dict(state)
