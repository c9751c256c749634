"""One model that both describes and draws: tasks over several streams with the same weights.

A unified recipe lists `tasks`, each giving the taking-part streams a role. Every training batch draws one
task (by weight, the same on every DDP rank), noises the streams it generates (flow loss), feeds the others
clean at t = 0 (UniDiffuser: a stream's own timestep says whether it is noise or input), and predicts
generated text token by token (cross-entropy). The loss is L_text + λ·L_diffusion (Transfusion), both parts
logged. Attention follows the roles (`mmdit.model.masks`).

Sampling: `generate` draws media from prompts (classifier-free guidance against the empty prompt, which
caption dropout trains); `describe` writes text about clean media, greedily or with a temperature.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from mmdit.model.masks import ROLES, role_structure
from mmdit.model.tokens import Tokens
from mmdit.objectives.guidance import twice
from mmdit.objectives.samplers import sampler
from mmdit.training.module import DiffusionModule
from mmdit.training.step_noise import StepNoise
from modalities.text import BOS, EOS, PAD, TextAdapter, decode_text, encode_text

TEXT, DIFFUSION = "text", "diffusion"


def text_loss(logits: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    """Next-token cross-entropy: logits [B, N, V] at position i predict ids [B, N] at i + 1, over real
    targets (mask [B, N])."""
    targets = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


class UnifiedModule(DiffusionModule):
    """A DiffusionModule over several streams and tasks (see the module docstring)."""

    def __init__(self, recipe: DictConfig | dict, classes: Mapping[str, list[str]]):
        super().__init__(recipe, classes)
        tasks = self.recipe.tasks
        texts = [s for s, a in self.adapters.items() if isinstance(a, TextAdapter)]
        if len(texts) != 1:
            raise ValueError(f"a unified recipe needs exactly one text stream; it has {texts}")
        self.text = texts[0]
        if self.recipe.objective.type != "flow":
            raise ValueError("unified recipes train with rectified flow (objective.type: flow)")
        for name, task in tasks.items():
            unknown = set(task.roles) - set(self.adapters)
            if unknown:
                raise KeyError(
                    f"task {name!r}: roles for unknown streams {sorted(unknown)}; "
                    f"streams: {list(self.adapters)}"
                )
            for stream, role in task.roles.items():
                if role not in ROLES:
                    raise ValueError(
                        f"task {name!r}: unknown stream role {role!r} for {stream!r}; roles: {ROLES}"
                    )
            if not any(role == "generate" for role in task.roles.values()):
                raise ValueError(f"task {name!r} generates nothing: give one stream the role generate")
        self.task_names = list(tasks)
        self.task_weights = [tasks[t].weight for t in self.task_names]

    # training ------------------------------------------------------------------------------------------

    def pick_task(self, step: int) -> str:
        """The task of a training step: drawn by weight from a generator seeded with (seed, step), so every
        DDP rank trains the same task at once."""
        draw = random.Random(self.recipe.seed * 1_000_003 + step)
        return draw.choices(self.task_names, self.task_weights)[0]

    def task_losses(
        self, batch: Mapping[str, Any], task: str, drop: float, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """{"text": L, "diffusion": L} (the parts present) for one batch trained as `task`. Noise, times,
        caption and label dropout come from `step_noise(generator)`; the losses are per-rank means as in
        `DiffusionModule.diffusion_loss`."""
        roles = self.recipe.tasks[task].roles
        draws = self.step_noise(generator)
        numbers = batch.get("numbers", {})
        tokens = {
            s: self.adapters[s].encode(batch["media"][s], numbers) for s in self.model.specs if s in roles
        }
        if drop > 0 and roles.get(self.text) in ("condition", "understand"):
            # Caption dropout: the empty prompt is the unconditional input that guidance samples against.
            tokens[self.text] = self._drop_text(tokens[self.text], drop, draws)
        batch_size = next(iter(tokens.values())).batch_size
        inputs, times, targets = {}, {}, {}
        for s, tok in tokens.items():
            times[s] = torch.zeros(batch_size, device=self.device)
            inputs[s] = tok
            if roles[s] == "generate" and not tok.discrete:
                t = draws(lambda n, g: self.objective.sample_time(n, generator=g), batch_size)
                noise = draws.normal(tok.x.shape).to(tok.x)
                inputs[s], times[s] = tok.with_x(self.objective.add_noise(tok.x, noise, t)), t
                targets[s] = self.objective.target(tok.x, noise)
        out = self.model(
            inputs,
            times,
            self._labels(batch, drop, draws),
            numbers=self.conditioning_numbers(numbers),
            structure=role_structure(inputs, roles),
        )
        losses = {}
        for s, tok in tokens.items():
            if roles[s] != "generate":
                continue
            if tok.discrete:
                losses[TEXT] = losses.get(TEXT, 0) + text_loss(out[s], tok.x, tok.mask)
            else:
                velocity = self.objective.velocity(out[s], inputs[s].x, times[s])
                losses[DIFFUSION] = losses.get(DIFFUSION, 0) + self.objective.loss(
                    velocity, targets[s], tok.mask
                )
        return losses

    def _drop_text(self, tokens: Tokens, drop: float, draws: StepNoise) -> Tokens:
        """With probability `drop` an item's text becomes the empty prompt [BOS, EOS]."""
        dropped = draws.uniform(tokens.batch_size).to(tokens.x.device) < drop
        empty = self._empty_prompt(tokens.batch_size, tokens.length).to(tokens.x.device)
        return self.adapters[self.text].encode(torch.where(dropped[:, None], empty, tokens.x))

    def _empty_prompt(self, n: int, length: int) -> Tensor:
        return encode_text("", length).expand(n, -1).clone()

    def total(self, losses: Mapping[str, Tensor]) -> Tensor:
        return losses.get(TEXT, 0) + self.recipe.objective.diffusion_weight * losses.get(DIFFUSION, 0)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        task = self.pick_task(self.global_step)
        losses = self.task_losses(batch, task, self.recipe.conditioning.dropout)
        loss = self.total(losses)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is not finite at step {self.global_step} (task {task}: "
                + ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                + "); lower optimizer.lr or set trainer.gradient_clip_val"
            )
        for part, value in losses.items():
            self.log(f"train/{part}", value)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        generator = torch.Generator().manual_seed(batch_idx)
        parts: dict[str, Tensor] = {}
        for task in self.task_names:
            for part, value in self.task_losses(batch, task, 0.0, generator).items():
                parts[part] = parts.get(part, 0) + value
        for part, value in parts.items():
            self.log(f"val/{part}", value, sync_dist=True)
        self.log("val/loss", self.total(parts), prog_bar=True, sync_dist=True)

    # sampling ------------------------------------------------------------------------------------------

    def preview_label_keys(self) -> list[str]:
        """Preview grids ask for every class of the data, through captions."""
        return list(self.classes)

    def _task_of(self, generated: str) -> dict[str, str]:
        """The roles of the task that generates `generated` (the first such task)."""
        for task in self.recipe.tasks.values():
            if task.roles.get(generated) == "generate":
                return dict(task.roles)
        raise KeyError(f"no task of this recipe generates stream {generated!r}")

    def prompts_for(self, labels: Mapping[str, Tensor], split: str = "train") -> list[str]:
        """A caption per item of `labels` ([n] per key) from the text stream's templates of `split`
        (template i mod count), so label-driven callers (preview grids) draw from prompts."""
        text: TextAdapter = self.adapters[self.text]
        templates = text.templates[split]
        n = len(next(iter(labels.values())))
        return [
            text.caption(
                {k: int(v[i]) for k, v in labels.items()}, self.classes, templates[i % len(templates)]
            )
            for i in range(n)
        ]

    @torch.no_grad()
    def generate(
        self,
        n: int,
        labels: Mapping[str, Tensor] | None = None,
        numbers: Mapping[str, Tensor] | None = None,
        *,
        prompts: Sequence[str] | None = None,
        steps: int | None = None,
        method: str | None = None,
        cfg: float | None = None,
        seed: int = 0,
        progress: Callable = iter,
    ) -> dict[str, Tensor]:
        """Media from text: {stream: media [n, ...]} for each media stream a task generates from the text.

        prompts: n strings; or labels ({key: [n]}), turned into captions with the training templates.
        numbers: {name: [n]} (e.g. seconds), default the data adapter's, size the layout and condition."""
        if prompts is None:
            if not labels:
                raise ValueError("give prompts, or labels to caption")
            prompts = self.prompts_for(labels)
        if len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} samples")
        settings = self.recipe.sample
        steps, method = steps or settings.steps, method or settings.sampler
        cfg = settings.cfg if cfg is None else cfg
        text: TextAdapter = self.adapters[self.text]
        ids = torch.stack([encode_text(p, text.max_length) for p in prompts])
        # The conditional and unconditional (empty prompt) halves run as one batch of 2n.
        prompt = text.encode(torch.cat([ids, self._empty_prompt(n, text.max_length)]).to(self.device))
        numbers = self.requested_numbers(n, numbers)
        doubled_numbers = {k: v.repeat(2).to(self.device) for k, v in numbers.items()}
        was_training = self.training
        self.eval()
        media = {}
        for stream in self.adapters:
            if stream == self.text:
                continue
            roles = self._task_of(stream)
            layout = self.adapters[stream].layout(n, numbers).to(self.device)
            doubled = twice(layout)

            def velocity(x: dict[str, Tensor], t: Tensor, stream=stream, doubled=doubled, roles=roles):
                given = {self.text: prompt, stream: doubled.with_x(x[stream].repeat(2, 1, 1))}
                times = {self.text: torch.zeros_like(t).repeat(2), stream: t.repeat(2)}
                out = self._forward(given, times, roles, doubled_numbers)[stream].to(x[stream].dtype)
                cond, uncond = out.chunk(2)
                return {stream: self.objective.velocity(uncond + cfg * (cond - uncond), x[stream], t)}

            generator = torch.Generator().manual_seed(seed)
            noise = {stream: torch.randn(layout.x.shape, generator=generator).to(layout.x)}
            with self.precision_autocast():
                x = sampler(method)(velocity, noise, self.objective.schedule(steps, self.device), progress)
            media[stream] = self.adapters[stream].decode(layout.with_x(x[stream]))
        self.train(was_training)
        return media

    def _forward(
        self,
        given: Mapping[str, Tokens],
        times: Mapping[str, Tensor],
        roles: Mapping[str, str],
        numbers: Mapping[str, Tensor],
    ) -> dict[str, Tensor]:
        """The model on `given` streams (put in the model's order), null labels, the roles' structure."""
        streams = {s: given[s] for s in self.model.specs if s in given}
        batch = next(iter(streams.values())).batch_size
        labels = {
            k: torch.full((batch,), e.null_index, device=self.device)
            for k, e in self.model.label_embedders.items()
        }
        return self.model(
            streams,
            dict(times),
            labels,
            numbers=self.conditioning_numbers(numbers),
            structure=role_structure(streams, roles),
        )

    @torch.no_grad()
    def describe(
        self,
        media: Tensor,
        stream: str | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        numbers: Mapping[str, Tensor] | None = None,
    ) -> list[str]:
        """Texts about clean media [n, ...] of `stream` (default: the one the describing task reads), written
        token by token: greedy at temperature 0, else sampled from softmax(logits / temperature). numbers:
        {name: [n]} of the media (e.g. seconds), default the data adapter's."""
        roles = self._task_of(self.text)
        stream = stream or next(s for s, r in roles.items() if s != self.text)
        text: TextAdapter = self.adapters[self.text]
        was_training = self.training
        self.eval()
        n = len(media)
        numbers = {k: v.to(self.device) for k, v in self.requested_numbers(n, numbers).items()}
        clean = self.adapters[stream].encode(media.to(self.device), numbers)
        ids = text.layout(n).x.to(self.device)
        finished = torch.zeros(n, dtype=torch.bool, device=self.device)
        generator = torch.Generator().manual_seed(seed)
        zeros = torch.zeros(n, device=self.device)
        for i in range(text.max_length - 1):
            given = {stream: clean, self.text: text.encode(ids)}
            times = {stream: zeros, self.text: zeros}
            logits = self._forward(given, times, roles, numbers)[self.text][:, i].float()
            logits[:, [PAD, BOS]] = -torch.inf  # neither is ever written after BOS
            if temperature > 0:
                probabilities = torch.softmax(logits / temperature, dim=-1).cpu()
                chosen = torch.multinomial(probabilities, 1, generator=generator)[:, 0].to(self.device)
            else:
                chosen = logits.argmax(dim=-1)
            ids[:, i + 1] = torch.where(finished, PAD, chosen)
            finished |= chosen == EOS
            if finished.all():
                break
        self.train(was_training)
        return [decode_text(row) for row in ids]
