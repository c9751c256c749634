"""The LightningModule: adapters + MMDiT + an objective, over the recipe's tasks. Lightning owns the loop,
precision, devices, strategy, clipping, accumulation, EMA and checkpoints; this class says what one step
computes (`task_losses`) and how the trained model generates (`generate`) and describes (`describe`).

Every recipe is a set of tasks (`mmdit.training.tasks`): a plain recipe the one task {data stream:
generate}, a unified recipe several. In a step, a drawn task's generated media streams are noised by the
objective (each at its own time), its clean streams sit at model time 0 (UniDiffuser: a stream's own time
says whether it is noise or input), and its generated discrete streams are predicted id by id
(cross-entropy). The loss is the discrete losses + `objective.diffusion_weight` · the diffusion losses
(Transfusion). The adapters are given by the run builder (`mmdit.training.build`): the module never
imports a modality.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from mmdit.contract import DiscreteAdapter, ModalityAdapter, Tokens
from mmdit.errors import UserError
from mmdit.model.backbone import MMDiT
from mmdit.model.masks import role_structure
from mmdit.model.packing import pack, padding_share, unpack
from mmdit.model.presets import model_arguments
from mmdit.objectives.build import build_objective
from mmdit.objectives.finite import FiniteWatch
from mmdit.objectives.guidance import EvaluationCount, GuidanceSchedule, guided_prediction, null_labels
from mmdit.objectives.objective import Predict, State
from mmdit.training.data import data_stream
from mmdit.training.joined import matched_classes
from mmdit.training.optim import RecipeOptimization
from mmdit.training.step_noise import StepNoise, step_generator
from mmdit.training.tasks import Task, pick_task, recipe_tasks

AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
"""Lightning's mixed precisions -> the autocast dtype they train the network in."""

DIFFUSION = "diffusion"
"""The loss part of the media streams; a discrete stream's part is named after the stream."""


def next_id_loss(logits: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    """Next-id cross-entropy: logits [B, N, V] at position i predict ids [B, N] at i + 1, over real
    targets (mask [B, N])."""
    targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


class DiffusionModule(RecipeOptimization, L.LightningModule):
    """recipe: a checked recipe (DictConfig or its plain-dict form); classes: {label: [class names]} of the
    training data, which size the label tables and let users ask for classes by name; adapters: {stream:
    adapter} for the recipe's streams, in its order (`mmdit.training.build.build_adapters`)."""

    def __init__(
        self,
        recipe: DictConfig | dict,
        classes: Mapping[str, list[str]],
        adapters: Mapping[str, ModalityAdapter],
    ):
        super().__init__()
        recipe = OmegaConf.create(recipe) if not isinstance(recipe, DictConfig) else recipe
        self.save_hyperparameters({"recipe": OmegaConf.to_container(recipe), "classes": dict(classes)})
        self.recipe, self.classes, self.adapters = recipe, dict(classes), dict(adapters)
        if list(self.adapters) != list(recipe.streams):
            raise KeyError(
                f"adapters for {list(self.adapters)}; the recipe's streams are {list(recipe.streams)}"
            )
        self.stream = data_stream(recipe)
        self.tasks = recipe_tasks(recipe, list(self.adapters), self.stream)
        missing = [k for k in recipe.conditioning.labels if k not in classes]
        if missing:
            raise KeyError(
                f"conditioning.labels {missing} are not labels of the data; it has {list(classes)}"
            )
        if recipe.data.packing and (len(recipe.streams) > 1 or recipe.tasks):
            raise ValueError(
                f"data.packing packs the items of one stream; this recipe has streams {list(recipe.streams)}"
                + (" and tasks (a unified recipe)" if recipe.tasks else "")
                + ": set data.packing=false"
            )
        self.objective = build_objective(recipe.objective)
        self.objective.check_sampler(recipe.sample.sampler)  # fails now, not at the first preview
        self.objective.check_schedule(recipe.sample.schedule)
        sample = recipe.sample
        try:
            GuidanceSchedule(sample.cfg, tuple(sample.guidance_interval), sample.cfg_schedule)
        except ValueError as err:
            raise ValueError(f"recipe {recipe.name!r}, section sample: {err}") from None
        self.last_nfe: int | None = None  # network evaluations per item of the last `generate`
        specs = [adapter.stream(name) for name, adapter in self.adapters.items()]
        specs = [
            s if s.vocab else replace(s, out_features=self.objective.output_features(s.features))
            for s in specs
        ]
        self.discrete = [s.name for s in specs if s.vocab]
        for name in self.discrete:
            if not isinstance(self.adapters[name], DiscreteAdapter):
                raise TypeError(f"stream {name!r} has a vocabulary, so its adapter must be a DiscreteAdapter")
        self.links = self._label_links()
        self.model = MMDiT(
            specs,
            labels={k: len(classes[k]) for k in recipe.conditioning.labels},
            numbers=list(recipe.conditioning.numbers),
            poolable=[
                s for s in self.adapters if any(t.roles.get(s, "generate") != "generate" for t in self.tasks)
            ],
            **model_arguments(recipe.model),
        )

    def _label_links(self) -> dict[str, tuple[str, Tensor]]:
        """{joined label: (data label, [classes of data label] class index of the joined label)}: the
        classes `data.join`'s `match` ties together, so captions asked for by label state a consistent pair
        (the digit and the note it maps to)."""
        links = {}
        for spec in self.recipe.data.join.values():
            if spec.key in self.classes and spec.to in self.classes:
                match = matched_classes(spec)
                target = [self.classes[spec.to].index(match[c]) for c in self.classes[spec.key]]
                links[spec.to] = (spec.key, torch.tensor(target))
        return links

    def linked(self, labels: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """`labels` ({key: [n]}) with every joined label set from the label it is matched to."""
        out = dict(labels)
        for to, (key, target) in self.links.items():
            if key in out:
                out[to] = target[out[key].cpu()]
        return out

    @property
    def prompt_stream(self) -> str | None:
        """The discrete stream that conditions generation in some task (a caption), if any."""
        return next((s for s in self.discrete for t in self.tasks if t.roles.get(s) == "condition"), None)

    @property
    def written_stream(self) -> str | None:
        """The discrete stream that some task generates (a description of media), if any."""
        return next((s for s in self.discrete for t in self.tasks if t.roles.get(s) == "generate"), None)

    @property
    def describes(self) -> bool:
        """Whether the model can write about media (`describe`)."""
        return self.written_stream is not None

    # training ------------------------------------------------------------------------------------------

    def step_noise(self, generator: torch.Generator | None = None) -> StepNoise:
        """The draws of a loss: from `generator` when given (validation's fixed draws); in training, this
        rank's share of the global batch's draws (`mmdit.training.step_noise`), seeded by the recipe seed and
        the training batch index across epochs (the optimizer step without gradient accumulation; with it,
        each micro-batch draws its own); outside a trainer, from torch's global RNG."""
        if generator is not None:
            return StepNoise(generator, device=self.device)
        trainer = self._trainer
        if trainer is None:  # called by hand (a benchmark, a notebook): fresh draws from torch's global RNG
            return StepNoise(torch.default_generator, device=self.device)
        step = max(trainer.fit_loop.total_batch_idx, 0)
        return StepNoise(
            step_generator(self.recipe.seed, step), trainer.global_rank, trainer.world_size, self.device
        )

    def _labels(self, batch: Mapping[str, Any], drop: float, draws: StepNoise) -> dict[str, Tensor]:
        """The conditioning labels of a batch; with probability `drop` an item's labels become the null
        class (all keys together, so the model also learns the fully unconditional prediction)."""
        labels = {k: batch["labels"][k] for k in self.recipe.conditioning.labels}
        if drop <= 0 or not labels:
            return labels
        first = next(iter(labels.values()))
        dropped = draws.uniform(len(first)).to(first.device) < drop
        nulls = null_labels(self.model, labels)
        return {k: torch.where(dropped, nulls[k], v) for k, v in labels.items()}

    def _drop_prompt(self, stream: str, tokens: Tokens, drop: float, draws: StepNoise) -> Tokens:
        """With probability `drop` an item's prompt becomes the empty value: the unconditional input that
        guidance samples against."""
        adapter: DiscreteAdapter = self.adapters[stream]
        dropped = draws.uniform(tokens.batch_size).to(tokens.x.device) < drop
        empty = adapter.empty(tokens.batch_size).to(tokens.x.device)
        return adapter.encode(torch.where(dropped[:, None], empty, tokens.x))

    def requested_numbers(self, n: int, numbers: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        """A request's numbers ({name: [n]}) with the names it leaves out taken from the data adapter's
        `default_numbers` (e.g. a clip's default seconds)."""
        defaults = self.adapters[self.stream].default_numbers()
        return {**{k: torch.full((n,), float(v)) for k, v in defaults.items()}, **(numbers or {})}

    def conditioning_numbers(self, numbers: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The recipe's `conditioning.numbers` out of a batch's or a request's numbers, as float [B]."""
        missing = [k for k in self.recipe.conditioning.numbers if k not in numbers]
        if missing:
            raise KeyError(
                f"conditioning.numbers {missing} are not numbers of the data; it has {sorted(numbers)}"
            )
        return {k: numbers[k].float().to(self.device) for k in self.recipe.conditioning.numbers}

    def batch_tokens(self, batch: Mapping[str, Any], task: Task) -> dict[str, Tokens]:
        """The tokens of the task's streams in a batch: the encoding `mmdit prepare` cached when the batch
        carries it (`data.cache: true`, one stream), else each adapter's encoding of the batch's media
        (`batch["media"]` is the data stream's media, or {stream: media} in a recipe of several streams)."""
        if "tokens" in batch:
            return {self.stream: Tokens(**batch["tokens"])}
        numbers = batch.get("numbers", {})
        media = batch["media"] if isinstance(batch["media"], Mapping) else {self.stream: batch["media"]}
        return {s: self.adapters[s].encode(media[s], numbers) for s in task.roles}

    def task_losses(
        self, batch: Mapping[str, Any], task: Task, drop: float, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """{part: loss} for one batch trained as `task`: "diffusion" (the objective's loss, summed over the
        generated media streams) and one cross-entropy per generated discrete stream. Noise, times, label
        and prompt dropout come from `step_noise(generator)`.

        Each loss is a mean over this batch's real tokens. Under DDP, Lightning averages the ranks'
        gradients, i.e. of the per-rank means: that is the mean over the global batch exactly when every
        rank holds as many real tokens (always for items without padding), and a mean of per-rank means
        otherwise, as with any DDP loss."""
        draws = self.step_noise(generator)
        tokens = self.batch_tokens(batch, task)
        media = [s for s in task.streams("generate") if s not in self.discrete]
        noise = {s: draws.normal(tokens[s].x.shape).to(tokens[s].x) for s in media}
        labels = self._labels(batch, drop, draws)
        if drop > 0:
            for s in task.roles:
                if s in self.discrete and task.roles[s] != "generate":
                    tokens[s] = self._drop_prompt(s, tokens[s], drop, draws)
        batch_size = next(iter(tokens.values())).batch_size
        samples = {
            s: self.objective.noise(tokens[s].x, noise[s], draws(self.objective.draw_time, batch_size))
            for s in media
        }
        inputs = {s: tokens[s].with_x(samples[s].x_t) if s in samples else tokens[s] for s in tokens}
        zeros = torch.zeros(batch_size, device=self.device)
        times = {s: samples[s].model_time.to(self.device) if s in samples else zeros for s in tokens}
        conditions = dict(labels=labels, numbers=self.conditioning_numbers(batch.get("numbers", {})))
        out = self._predict(inputs, times, conditions, task)
        losses: dict[str, Tensor] = {}
        for s in media:
            loss = self.objective.loss(out[s], samples[s], tokens[s].mask)
            losses[DIFFUSION] = losses[DIFFUSION] + loss if DIFFUSION in losses else loss
        for s in task.streams("generate"):
            if s in self.discrete:
                losses[s] = next_id_loss(out[s], tokens[s].x, tokens[s].mask)
        return losses

    def _predict(
        self,
        inputs: Mapping[str, Tokens],
        times: Mapping[str, Tensor],
        conditions: Mapping[str, Any],
        task: Task,
    ) -> dict[str, Tensor]:
        """The model's outputs {stream: [B, N, F_out]}. Several streams attend by their roles' structure
        (`mmdit.model.masks`). With `data.packing` the (one) stream's items are packed into rows of the
        padded length, so the model runs on fewer rows, and its output is unpacked to the padded layout
        (zeros on padding, which the loss's mask ignores); training logs the padding share of both."""
        if len(inputs) > 1:
            structure = role_structure(inputs, task.roles)
            return self.model(inputs, times, **conditions, structure=structure, clean=task.inputs)
        if not self.recipe.data.packing:
            return self.model(inputs, times, **conditions)
        tokens = inputs[self.stream]
        packed = pack(tokens, capacity=tokens.length)
        if self.training and self._trainer is not None:
            self.log("train/padding_share", padding_share(tokens.mask))
            self.log("train/packed_padding_share", padding_share(packed.tokens.mask))
        out = self.model({self.stream: packed.tokens}, times[self.stream], **conditions, items=packed.items)
        return {self.stream: unpack(out[self.stream], packed, tokens)}

    def total(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The discrete losses + `objective.diffusion_weight` · the diffusion loss."""
        weight = self.recipe.objective.diffusion_weight
        return sum(weight * v if part == DIFFUSION else v for part, v in losses.items())

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        task = pick_task(self.tasks, self.recipe.seed, self.global_step)
        losses = self.task_losses(batch, task, self.recipe.conditioning.dropout)
        loss = self.total(losses)
        if not torch.isfinite(loss):
            detail = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise FloatingPointError(
                f"loss is not finite at step {self.global_step} (task {task.name}: {detail}); lower "
                "optimizer.lr, set trainer.gradient_clip_val, or check the data for NaN values"
            )
        if len(losses) > 1:
            for part, value in losses.items():
                self.log(f"train/{part}", value)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        # Fixed noise and times per batch, so validation losses are comparable across the run.
        generator = torch.Generator().manual_seed(batch_idx)
        parts: dict[str, Tensor] = {}
        for task in self.tasks:
            for part, value in self.task_losses(batch, task, 0.0, generator).items():
                parts[part] = parts[part] + value if part in parts else value
        if len(parts) > 1:
            for part, value in parts.items():
                self.log(f"val/{part}", value, sync_dist=True)
        self.log("val/loss", self.total(parts), prog_bar=True, sync_dist=True)

    # sampling ------------------------------------------------------------------------------------------

    def preview_label_keys(self) -> list[str]:
        """The label keys preview grids ask for, one class per column: every label of the data when
        generation is prompted (through captions), else the model's label tables."""
        return list(self.classes) if self.prompt_stream else list(self.model.label_embedders)

    def class_index(self, key: str, value: str | int) -> int:
        """A class given by name ("7", "cat") or index -> its index; unknown ones list the valid names."""
        names = self.classes[key]
        if str(value) in names:
            return names.index(str(value))
        if isinstance(value, int) or str(value).isdigit():
            if 0 <= int(value) < len(names):
                return int(value)
        raise KeyError(f"label {key!r} has no class {value!r}; classes: {names}")

    def prompts_for(self, labels: Mapping[str, Tensor], split: str = "train") -> list[str]:
        """A caption per item of `labels` ([n] per key) in the prompt stream's phrasings of `split` (phrasing
        i mod count), so label-driven callers (preview grids, eval) draw from prompts."""
        adapter: DiscreteAdapter = self.adapters[self.prompt_stream]
        labels = self.linked(labels)
        n = len(next(iter(labels.values())))
        return [
            adapter.caption({k: int(v[i]) for k, v in labels.items()}, self.classes, split, i)
            for i in range(n)
        ]

    def precision_autocast(self) -> contextlib.AbstractContextManager:
        """Autocast on this module's device in the precision the recipe trains in (`trainer.precision`
        bf16-mixed or 16-mixed; none for the others), for running the network outside Lightning. Sampling
        uses it: the weights were fitted to that precision, and on a GPU or a CPU with bf16 units it is the
        faster one; the sampler's state stays float32."""
        dtype = AUTOCAST_DTYPES.get(str(self.recipe.trainer.get("precision", "32-true")))
        return torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def _guided_features(self, streams: Sequence[str]) -> dict[str, Tensor]:
        """{stream: [F_out] bool}: the output features classifier-free guidance mixes. A learned variance is
        never guided; `sample.guided_channels: C` guides only the first C channels of each patch (features
        are laid out channel-fastest, `ModalityAdapter.channels`), as DiT's released sampling guided 3 of
        its 4 latent channels."""
        guided, channels = {}, self.recipe.sample.guided_channels
        for name in streams:
            spec = self.model.specs[name]
            mask = torch.arange(spec.out_features or spec.features) < spec.features
            if channels is not None:
                per_patch = self.adapters[name].channels
                if per_patch is None:
                    raise ValueError(
                        f"sample.guided_channels needs a stream with channels; {name!r} has none"
                    )
                mask &= torch.arange(len(mask)) % per_patch < channels
            guided[name] = mask
        return guided

    def task(self, name: str) -> Task:
        """The recipe's task `name`; an unknown name lists the tasks."""
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"this model has no task {name!r}; its tasks: {[t.name for t in self.tasks]}")

    def media_inputs(self, task: Task) -> list[str]:
        """The media streams `task` reads clean (its inputs but the discrete ones: prompts)."""
        return [s for s in task.inputs if s not in self.discrete]

    def task_making(self, stream: str, source: str | None = None) -> Task:
        """The first task that generates media stream `stream` from a prompt alone (`source` None), or from
        the clean media of stream `source`; none is an error listing what the model can make."""
        for task in self.tasks:
            if task.roles.get(stream) == "generate" and self.media_inputs(task) == (
                [source] if source else []
            ):
                return task
        can = [f"{t.name} ({t.direction})" for t in self.tasks]
        wanted = f"from stream {source!r}" if source else "from a prompt alone"
        raise KeyError(f"no task of this model generates stream {stream!r} {wanted}; its tasks: {can}")

    def _generation_tasks(
        self, task: str | None, given: Mapping[str, Tensor] | None
    ) -> list[tuple[Task, list[str]]]:
        """(task, the media streams it generates): the task named `task`, or for each media stream the first
        task generating it from what a call can give (prompts, and the media in `given`)."""
        if task is not None:
            chosen = self.task(task)
            streams = [s for s in chosen.streams("generate") if s not in self.discrete]
            if not streams:
                raise ValueError(f"task {task!r} generates no media (it writes {chosen.streams('generate')})")
            return [(chosen, streams)]

        def feasible(t: Task) -> bool:
            return all(s in (given or {}) for s in self.media_inputs(t))

        picked: dict[str, tuple[Task, list[str]]] = {}
        for stream in self.adapters:
            if stream in self.discrete:
                continue
            makers = [t for t in self.tasks if t.roles.get(stream) == "generate"]
            if makers:
                t = next((t for t in makers if feasible(t)), makers[0])
                picked.setdefault(t.name, (t, []))[1].append(stream)
        return list(picked.values())

    def _layout(
        self, stream: str, n: int, numbers: Mapping[str, Tensor], options: Mapping[str, Any]
    ) -> Tokens:
        """The adapter's skeleton of n items; an option its `layout` does not take is named with the valid
        ones."""
        adapter = self.adapters[stream]
        accepted = [p for p in inspect.signature(adapter.layout).parameters][2:]  # after batch_size, numbers
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise KeyError(
                f"stream {stream!r}: layout takes no option {', '.join(unknown)}; valid: {accepted}"
            )
        return adapter.layout(n, numbers, **options).to(self.device)

    @torch.no_grad()
    def generate(
        self,
        n: int,
        labels: Mapping[str, Tensor] | None = None,
        numbers: Mapping[str, Tensor] | None = None,
        *,
        prompts: Sequence[str] | None = None,
        given: Mapping[str, Tensor] | None = None,
        steps: int | None = None,
        method: str | None = None,
        cfg: float | None = None,
        schedule: str | None = None,
        guidance_interval: Sequence[float] | None = None,
        cfg_schedule: str | None = None,
        seed: int = 0,
        progress: Callable = iter,
        layout: Mapping[str, Mapping[str, Any]] | None = None,
        task: str | None = None,
    ) -> dict[str, Tensor]:
        """Sample n items of every media stream a task generates (of task `task` only, when named):
        {stream: media [n, ...]} as the adapters decode them.

        labels: {key: [n] class indices}; omitted keys are the null class. In a prompted model (a discrete
        condition stream) they are captioned when no `prompts` (n strings) are given.
        numbers: {name: [n] float} (e.g. seconds); omitted names take the data adapter's `default_numbers`.
        They reach every adapter's `layout` (which masks tokens past each item's extent) and the model.
        given: {stream: media [n, ...]} for the clean media conditions of a task (another medium).
        layout: {stream: options of its adapter's `layout`}, e.g. {"image": {"size": [16, 16]}}.
        steps / method / cfg / schedule (of times) / guidance_interval / cfg_schedule default to the recipe's
        `sample` section. Sets `last_nfe`, the network evaluations per item this call made (NFE; a guided
        evaluation counts two), summed over the generating tasks."""
        settings = self.recipe.sample
        steps = settings.steps if steps is None else steps
        method, cfg = method or settings.sampler, settings.cfg if cfg is None else cfg
        if n < 1 or steps < 1 or not (math.isfinite(cfg) and cfg >= 0):
            raise UserError(
                f"sampling needs n >= 1, steps >= 1 and a finite cfg >= 0; got {n}, {steps}, {cfg}"
            )
        schedule = schedule or settings.schedule
        self.objective.check_sampler(method)
        self.objective.check_schedule(schedule)

        def integrate(predict: Predict, noise: State, generator: torch.Generator) -> State:
            watch = FiniteWatch(predict, progress)  # stops at a non-finite prediction, naming the step
            return self.objective.sample(
                watch.predict, noise, steps, method, watch.progress, generator, schedule
            )

        tokens = self.sample_tokens(
            n,
            labels,
            numbers,
            integrate=integrate,
            prompts=prompts,
            given=given,
            cfg=cfg,
            guidance_interval=guidance_interval,
            cfg_schedule=cfg_schedule,
            seed=seed,
            layout=layout,
            task=task,
        )
        return {s: self.adapters[s].decode(tok) for s, tok in tokens.items()}

    @torch.no_grad()
    def sample_tokens(
        self,
        n: int,
        labels: Mapping[str, Tensor] | None = None,
        numbers: Mapping[str, Tensor] | None = None,
        *,
        integrate: Callable[[Predict, State, torch.Generator], State],
        prompts: Sequence[str] | None = None,
        given: Mapping[str, Tensor] | None = None,
        cfg: float | None = None,
        guidance_interval: Sequence[float] | None = None,
        cfg_schedule: str | None = None,
        seed: int = 0,
        layout: Mapping[str, Mapping[str, Any]] | None = None,
        task: str | None = None,
    ) -> dict[str, Tokens]:
        """What `generate` decodes: {stream: Tokens [n, N, F]} of every generated media stream, each task's
        streams integrated from noise (drawn from `seed`) by `integrate(predict, noise, generator)`, where
        `predict` is the guided network (`mmdit.objectives.guidance.guided_prediction`) and `generator`
        draws a stochastic sampler's fresh noise; the network runs in the recipe's precision. The other
        arguments are `generate`'s; sets `last_nfe`."""
        settings = self.recipe.sample
        cfg = settings.cfg if cfg is None else cfg
        interval = tuple(settings.guidance_interval if guidance_interval is None else guidance_interval)
        cfg_schedule = cfg_schedule or settings.cfg_schedule
        jobs = self._generation_tasks(task, given)
        prompted = any(len(self.media_inputs(t)) < len(t.inputs) for t, _ in jobs)
        if prompted and prompts is None:
            if not labels:
                raise ValueError("give prompts, or labels to caption")
            prompts = self.prompts_for(labels)
        if prompts is not None and len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} samples")
        was_training = self.training
        self.eval()
        numbers = self.requested_numbers(n, numbers)
        full = {k: torch.full((n,), e.null_index) for k, e in self.model.label_embedders.items()}
        full.update({k: v for k, v in (labels or {}).items() if k in full})
        full = {k: v.to(self.device) for k, v in full.items()}
        model_numbers = self.conditioning_numbers(numbers)
        tokens, count = {}, EvaluationCount()
        for job, streams in jobs:
            conditions, unconditional = self._conditions(job, n, prompts, given, numbers)
            layouts = {s: self._layout(s, n, numbers, (layout or {}).get(s, {})) for s in streams}
            generator = torch.Generator().manual_seed(seed)
            noise = {s: torch.randn(tok.x.shape, generator=generator).to(tok.x) for s, tok in layouts.items()}
            predict = guided_prediction(
                self.model,
                layouts,
                full,
                scale=cfg,
                numbers=model_numbers,
                guided_features=self._guided_features(streams),
                conditions=conditions,
                unconditional=unconditional,
                roles=job.roles if conditions else None,
                interval=interval,
                scale_schedule=cfg_schedule,
                count=count,
            )
            with self.precision_autocast():
                x = integrate(predict, noise, generator)
            tokens.update({s: tok.with_x(x[s]) for s, tok in layouts.items()})
        self.train(was_training)
        self.last_nfe = count.nfe
        return tokens

    def _conditions(
        self,
        task: Task,
        n: int,
        prompts: Sequence[str] | None,
        given: Mapping[str, Tensor] | None,
        numbers: Mapping[str, Tensor],
    ) -> tuple[dict[str, Tokens], dict[str, Tokens]]:
        """The clean streams of a generating task ({stream: Tokens}) and what replaces them in guidance's
        unconditional branch (the empty prompt)."""
        conditions, unconditional = {}, {}
        for s, role in task.roles.items():
            if role == "generate":
                continue
            adapter = self.adapters[s]
            if s in self.discrete:
                ids = torch.stack([adapter.to_ids(p) for p in prompts])
                conditions[s] = adapter.encode(ids.to(self.device))
                unconditional[s] = adapter.encode(adapter.empty(n).to(self.device))
            elif given and s in given:
                conditions[s] = adapter.encode(given[s].to(self.device), numbers)
            else:
                raise ValueError(
                    f"task {task.name!r} generates from stream {s!r}: give its media (given={{{s!r}: ...}})"
                )
        return conditions, unconditional

    def describing_task(self, stream: str | None = None) -> Task:
        """The first task that writes the discrete stream about media (about `stream`'s, when given)."""
        written = self.written_stream
        for task in self.tasks:
            if task.roles.get(written) == "generate" and (
                stream is None or task.roles.get(stream) == "understand"
            ):
                return task
        raise ValueError(f"no task of this recipe describes stream {stream!r}")

    @torch.no_grad()
    def describe(
        self,
        media: Tensor,
        stream: str | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        numbers: Mapping[str, Tensor] | None = None,
    ) -> list[str]:
        """Values of the generated discrete stream about clean media [n, ...] of `stream` (default: the one
        the describing task reads), written id by id: greedy at temperature 0, else sampled from
        softmax(logits / temperature). numbers: {name: [n]} of the media (e.g. seconds), default the data
        adapter's."""
        if not self.describes:
            raise ValueError("no task of this recipe generates a discrete stream: the model cannot describe")
        written = self.written_stream
        task = self.describing_task(stream)
        stream = stream or next(s for s in task.roles if s != written)
        adapter: DiscreteAdapter = self.adapters[written]
        was_training = self.training
        self.eval()
        n = len(media)
        numbers = {k: v.to(self.device) for k, v in self.requested_numbers(n, numbers).items()}
        clean = self.adapters[stream].encode(media.to(self.device), numbers)
        start = adapter.layout(n).x.to(self.device)
        ids = start.clone()
        finished = torch.zeros(n, dtype=torch.bool, device=self.device)
        generator = torch.Generator().manual_seed(seed)
        zeros = torch.zeros(n, device=self.device)
        labels = {
            k: torch.full((n,), e.null_index, device=self.device)
            for k, e in self.model.label_embedders.items()
        }
        model_numbers = self.conditioning_numbers(numbers)
        order = [s for s in self.model.specs if s in (stream, written)]
        for i in range(adapter.max_length - 1):
            given = {stream: clean, written: adapter.encode(ids)}
            streams = {s: given[s] for s in order}
            logits = self.model(
                streams,
                dict.fromkeys(order, zeros),
                labels,
                numbers=model_numbers,
                structure=role_structure(streams, task.roles),
                clean=[stream],
            )[written][:, i].float()
            logits[:, list(adapter.never_written)] = -torch.inf
            if temperature > 0:
                probabilities = torch.softmax(logits / temperature, dim=-1).cpu()
                chosen = torch.multinomial(probabilities, 1, generator=generator)[:, 0].to(self.device)
            else:
                chosen = logits.argmax(dim=-1)
            ids[:, i + 1] = torch.where(finished, start[:, i + 1], chosen)
            finished |= chosen == adapter.end_id
            if finished.all():
                break
        self.train(was_training)
        return [adapter.from_ids(row) for row in ids]
