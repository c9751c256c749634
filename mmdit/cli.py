"""The `mmdit` command: fit, prepare, sample, describe, eval, export, convert, recipes."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table
from rich.text import Text

from mmdit.errors import UserError

# Literal, so that `mmdit --help` does not import torch; tests/test_cli_errors.py checks them against the
# objectives' own lists (mmdit.objectives.build.OBJECTIVES).
SAMPLERS = ("euler", "heun", "dpmpp_2m", "ddpm", "ddim")
SCHEDULES = ("uniform", "quantile", "karras")
CFG_SCHEDULES = ("constant", "linear")

console = Console(stderr=True)


def _fit(args: argparse.Namespace) -> None:
    from mmdit.recipe import load_recipe
    from mmdit.training.token_cache import CacheMiss
    from mmdit.training.train import fit

    try:
        run_dir = fit(load_recipe(args.recipe, args.overrides), resume=args.resume)
    except CacheMiss as miss:  # name the exact command, with this run's recipe and overrides
        raise CacheMiss(miss.reason, shlex.join(["mmdit", "prepare", args.recipe, *args.overrides])) from None
    report = run_dir / "eval.json"
    if report.exists():
        _print_report(json.loads(report.read_text()))
    written = ("samples.png", "loss.png", "weights.safetensors", "codec.safetensors", "eval.json")
    files = ", ".join(name for name in written if (run_dir / name).exists())
    console.print(f"run directory: [bold]{run_dir}[/] ({files})")


def _parse_labels(module, given: list[str]) -> dict[str, int]:
    """--label 7 (the model's only label) or --label digit=7; classes by name or index."""
    keys = list(module.model.label_embedders)
    labels = {}
    for item in given:
        key, _, value = item.rpartition("=")
        if not key:
            if len(keys) != 1:
                raise KeyError(f"--label {item!r}: this model has labels {keys}; write KEY=CLASS")
            key = keys[0]
        if key not in keys:
            raise KeyError(f"--label {item!r}: unknown label {key!r}; this model has {keys}")
        labels[key] = module.class_index(key, value)
    return labels


def _parse_numbers(module, given: list[str]) -> dict[str, float]:
    """--number seconds=0.5: names the model is conditioned on or the data adapter sizes items by."""
    known = {*module.recipe.conditioning.numbers, *module.adapters[module.stream].default_numbers()}
    numbers = {}
    for item in given:
        key, _, value = item.partition("=")
        if key not in known:
            raise KeyError(f"--number {item!r}: unknown number {key!r}; this model takes {sorted(known)}")
        try:
            numbers[key] = float(value)
        except ValueError:
            raise ValueError(f"--number {item!r}: {value!r} is not a number") from None
    return numbers


def _parse_layout(given: list[str]) -> dict[str, object]:
    """--layout size=16,16 -> {"size": [16, 16]}: values are YAML scalars, a comma makes a list."""
    import yaml

    options = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--layout {item!r} is not OPTION=VALUE")
        parts = [yaml.safe_load(v) for v in value.split(",")]
        options[key] = parts if "," in value else parts[0]
    return options


def _guidance_options(args: argparse.Namespace) -> dict[str, object]:
    """--schedule, --guidance-interval, --cfg-schedule as `generate` / `evaluate` take them."""
    return dict(
        schedule=args.schedule, guidance_interval=args.guidance_interval, cfg_schedule=args.cfg_schedule
    )


def _sample(args: argparse.Namespace) -> None:
    import torch

    from mmdit.training.build import load_module

    module = load_module(args.weights)
    chosen = _parse_labels(module, args.label)
    labels = {k: torch.full((args.n,), v) for k, v in chosen.items()}
    numbers = {k: torch.full((args.n,), v) for k, v in _parse_numbers(module, args.number).items()}
    options = {}
    if args.prompt is not None:
        if module.prompt_stream is None:
            raise ValueError(f"{args.weights} is not a prompted (text-conditioned) model; use --label")
        options["prompts"] = [args.prompt] * args.n
    if args.to is not None or args.source is not None:
        options.update(_cross_media(module, args))

    def progress(steps):
        return track(steps, description=f"sampling {args.n}", console=console, transient=True)

    options.update(steps=args.steps, method=args.sampler, cfg=args.cfg, seed=args.seed, progress=progress)
    options.update(_guidance_options(args))
    options["layout"] = {module.stream: _parse_layout(args.layout)}
    media = module.generate(args.n, labels, numbers, **options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "_".join(f"{k}-{module.classes[k][v]}" for k, v in chosen.items()) or "unconditional"
    if args.prompt is not None or args.source is not None:
        said = args.prompt if args.prompt is not None else f"from {Path(args.source).stem}"
        tag = "".join(c if c.isalnum() else "-" for c in said.lower()).strip("-")[:40] or "empty-prompt"
    for stream, items in media.items():
        adapter = module.adapters[stream]
        for i, item in enumerate(items):
            for suffix in adapter.sample_suffixes:
                adapter.save(item, out / f"{stream}_{tag}_{i:03d}{suffix}")
        adapter.preview(items, out / f"{stream}_{tag}_grid.png")
    console.print(f"wrote {args.n} samples per stream and a preview grid to [bold]{out}[/]")


def _stream_named(module, name: str, what: str) -> str:
    """A stream given by its name or its modality's ("audio"), among the model's media streams."""
    media = [s for s in module.adapters if s not in module.discrete]
    if name in media:
        return name
    by_modality = [s for s in media if module.recipe.streams[s].modality == name]
    if len(by_modality) == 1:
        return by_modality[0]
    raise UserError(f"{what} {name!r}: this model's media streams are {media} (by name or modality)")


def _file_stream(module, path: str, candidates: list[str], purpose: str) -> str:
    """Which of the `candidates` streams (what the model can use for `purpose`) reads the file at `path`,
    by its suffix."""
    suffix = Path(path).suffix.lower()
    readers = [s for s in candidates if suffix in module.adapters[s].read_suffixes]
    if len(readers) == 1:
        return readers[0]
    formats = {s: list(module.adapters[s].read_suffixes) for s in candidates}
    raise UserError(
        f"{path}: this model {purpose} files of stream(s) {formats}, not {suffix or 'suffix-less'} files"
    )


def _cross_media(module, args: argparse.Namespace) -> dict:
    """--to STREAM (and --from FILE): the task that makes it, and the file's media as its condition."""
    if args.to is None:
        raise UserError("--from FILE needs --to STREAM: the medium to make from it")
    to = _stream_named(module, args.to, "--to")
    if args.source is None:
        return {"task": module.task_making(to).name}
    makers = [t for t in module.tasks if t.roles.get(to) == "generate"]
    sources = [s for t in makers for s in module.media_inputs(t)]
    stream = _file_stream(module, args.source, list(dict.fromkeys(sources)), f"makes {to!r} from")
    task = module.task_making(to, stream)
    item = _item(module.adapters[stream], args.source)
    if module.prompt_stream in task.roles and args.prompt is None:
        raise UserError(f"task {task.name!r} makes {to!r} from {stream!r} and a prompt: give --prompt too")
    return {"task": task.name, "given": {stream: item["media"].expand(args.n, *item["media"].shape)}}


def _describe(args: argparse.Namespace) -> None:
    import torch

    from mmdit.training.build import load_module

    module = load_module(args.weights)
    if not module.describes:
        raise UserError(f"{args.weights} is not a unified model: it cannot describe")
    described = list(dict.fromkeys(s for t in module.tasks for s, r in t.roles.items() if r == "understand"))
    streams = [_file_stream(module, path, described, "describes") for path in args.files]
    stream = streams[0]
    for path, other in zip(args.files, streams, strict=True):
        if other != stream:
            raise UserError(
                f"{path} is for stream {other!r}, {args.files[0]} for {stream!r}: describe reads files "
                "of one medium per call"
            )
    adapter = module.adapters[stream]
    items = [_item(adapter, path) for path in args.files]
    first = tuple(items[0]["media"].shape)
    for path, item in zip(args.files, items, strict=True):
        if tuple(item["media"].shape) != first:
            raise UserError(
                f"{path}: shape {list(item['media'].shape)}, while {args.files[0]} has {list(first)}; "
                "describe reads files of one shape"
            )
    media = torch.stack([item["media"] for item in items])
    numbers = {k: torch.tensor([item["numbers"][k] for item in items]) for k in items[0]["numbers"]}
    texts = module.describe(media, stream, args.temperature, args.seed, numbers or None)
    for path, text in zip(args.files, texts, strict=True):
        print(f"{path}\t{text}")


def _item(adapter, path: str) -> dict:
    """One file through its adapter, as an item the model reads; an error that does not name the file
    gets its name."""
    try:
        return adapter.item(path)
    except (ValueError, OSError) as err:
        if path in str(err):
            raise
        raise UserError(f"cannot read {path}: {err}") from err


def _print_report(report: dict) -> None:
    """eval.json as a table: generated (or, for a codec, reconstructed) media beside real data."""
    table = Table(title=f"eval: {report['recipe']}")
    rows = [row for row in ("generated", "reconstructed", "reference") if row in report]
    metrics = list(report[rows[0]])
    table.add_column("")
    for m in metrics:
        table.add_column(m, justify="right")
    for row in rows:
        table.add_row(row, *(f"{report[row].get(m, float('nan')):.4g}" for m in metrics))
    console.print(table)
    if "sampling" in report:
        s = report["sampling"]
        console.print(
            f"{s['samples']} samples, {s['sampler']} {s['steps']} steps ({s['schedule']}, {s['nfe']} NFE), "
            f"cfg {s['cfg']} ({s['cfg_schedule']} in t {s['guidance_interval']}), {s['seconds']} s"
        )
        if "tasks" in report:
            _print_tasks(report["tasks"])
    else:
        c = report["codec"]
        console.print(
            f"latents {c['latent_shape']} per item ({c['compression']}x fewer values), {c['seconds']} s"
        )


def _print_tasks(tasks: dict) -> None:
    """A unified model's every task: its direction and each metric, generated beside real data."""
    table = Table(title="every task of the model (one checkpoint)")
    for column in ("task", "direction", "metric", "generated", "reference"):
        table.add_column(column, justify="right" if column in ("generated", "reference") else "left")
    for name, rows in tasks.items():
        for i, metric in enumerate(m for m in rows["generated"] if m != "samples"):
            first = i == 0
            table.add_row(
                name if first else "",
                rows["direction"] if first else "",
                metric,
                f"{rows['generated'][metric]:.4g}",
                f"{rows['reference'].get(metric, float('nan')):.4g}",
                end_section=False,
            )
        table.add_section()
    console.print(table)


def _eval(args: argparse.Namespace) -> None:
    from mmdit.training.build import load_module
    from mmdit.training.evaluate import evaluate

    module = load_module(args.weights)
    report = evaluate(
        module,
        steps=args.steps,
        method=args.sampler,
        cfg=args.cfg,
        **_guidance_options(args),
        samples=args.samples,
        show_progress=not args.json,
    )
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)


def _prepare(args: argparse.Namespace) -> None:
    import time

    from mmdit.recipe import load_recipe
    from mmdit.training.build import build_adapters, build_data
    from mmdit.training.token_cache import MANIFEST, prepare_tokens

    recipe = load_recipe(args.recipe, args.overrides)
    adapters = build_adapters(recipe)
    start = time.perf_counter()
    if recipe.tasks:  # build the datasets (filling adapters' own caches); tokens are not cached
        data = build_data(recipe, adapters)
        counts = {"train": len(data.train), "heldout": len(data.heldout)}
        note = "unified recipes are not token-cached"
    else:
        counts = {}
        for split, folder in prepare_tokens(recipe, adapters).items():
            manifest = json.loads((folder / MANIFEST).read_text())
            counts[split] = manifest["items"]
            size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
            console.print(
                f"{split} tokens: x {manifest['shapes']['x']} per item, {len(manifest['shards'])} shard(s), "
                f"{size:.1f} MB, written {manifest['created']}, in [bold]{folder}[/]"
            )
        note = "fit with data.cache=true to use them"
    console.print(
        f"prepared {recipe.name}: {counts['train']} train and {counts['heldout']} held-out items in "
        f"{time.perf_counter() - start:.1f} s; {note}"
    )


def _export(args: argparse.Namespace) -> None:
    from mmdit.training.export import export_checkpoint

    console.print(f"wrote [bold]{export_checkpoint(args.checkpoint, args.out)}[/]")


def _convert(args: argparse.Namespace) -> None:
    from mmdit.convert import convert

    console.print(f"wrote [bold]{convert(args.kind, args.source, args.out, heads=args.heads)}[/]")


def _modalities(args: argparse.Namespace) -> None:
    from mmdit.training.build import modalities

    table = Table(title="modalities (recipe key: streams.<name>.modality)")
    for column in ("name", "from", "options (default)", "summary"):
        table.add_column(column, overflow="fold")
    for entry in modalities():
        options = ", ".join(f"{k}={v}" if v else k for k, v in entry.options.items())
        table.add_row(entry.name, entry.origin, options, entry.summary)
    Console().print(table)  # the listing is the command's output: stdout, as `mmdit recipes`


def _recipes(args: argparse.Namespace) -> None:
    from mmdit.recipe import available

    for name, description in available().items():
        print(f"{name:24s} {description}")


def positive_int(text: str) -> int:
    """An argument that counts something (samples, steps, heads): an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """A scale or temperature: a finite number of at least 0 (nan, inf and negatives are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmdit", description="Diffusion transformers for every modality.")
    debug = "show the Python traceback of an error"
    p.add_argument("--debug", action="store_true", help=debug)
    sub = p.add_subparsers(dest="command", required=True)
    # --debug after the command too; without a default there, it keeps a --debug given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)

    def command(name: str, **options) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **options)

    fit = command("fit", help="train a recipe: mmdit fit RECIPE [key=value ...]")
    fit.add_argument("recipe", help="a bundled recipe name (see `mmdit recipes`) or a YAML path")
    fit.add_argument("overrides", nargs="*", help="recipe overrides, e.g. trainer.max_steps=500")
    fit.add_argument("--resume", help="a Lightning .ckpt to resume from")
    fit.set_defaults(run=_fit)

    prepare = command(
        "prepare", help="encode a recipe's data once into a token cache (train on it with data.cache=true)"
    )
    prepare.add_argument("recipe", help="a bundled recipe name or a YAML path")
    prepare.add_argument("overrides", nargs="*", help="recipe overrides, e.g. data.source.folder=PATH")
    prepare.set_defaults(run=_prepare)

    def sampling_options(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("weights", help="a .safetensors export or a Lightning .ckpt")
        cmd.add_argument("--steps", type=positive_int, help="sampling steps (default: the recipe's)")
        cmd.add_argument(
            "--sampler",
            choices=SAMPLERS,
            help="euler / heun / dpmpp_2m (flow) or ddpm / ddim (Gaussian); default: the recipe's",
        )
        cmd.add_argument(
            "--schedule",
            choices=SCHEDULES,
            help="the steps' times: uniform, or (flow) quantile / karras; default: the recipe's",
        )
        cmd.add_argument(
            "--cfg", type=non_negative_float, help="classifier-free guidance scale (default: the recipe's)"
        )
        cmd.add_argument(
            "--guidance-interval",
            type=float,
            nargs=2,
            metavar=("LO", "HI"),
            help="guide only for model times LO <= t <= HI (t = 1 is noise); default: the recipe's",
        )
        cmd.add_argument(
            "--cfg-schedule", choices=CFG_SCHEDULES, help="the scale over t; default: the recipe's"
        )

    sample = command("sample", help="draw samples into files")
    sampling_options(sample)
    sample.add_argument("--n", type=positive_int, default=16, help="how many samples")
    sample.add_argument("--label", action="append", default=[], help="CLASS or KEY=CLASS (name or index)")
    sample.add_argument("--prompt", help="a unified model's text prompt, e.g. 'a handwritten seven'")
    sample.add_argument(
        "--to", help="the medium to make (a stream or modality name) in a model that makes several"
    )
    sample.add_argument(
        "--from", dest="source", metavar="FILE", help="a media file to make the --to medium from"
    )
    sample.add_argument(
        "--number", action="append", default=[], help="NAME=VALUE, e.g. seconds=0.5 (repeatable)"
    )
    sample.add_argument(
        "--layout",
        action="append",
        default=[],
        help="OPTION=VALUE of the adapter's layout, e.g. size=16,16 (repeatable)",
    )
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", default="samples", help="output folder")
    sample.set_defaults(run=_sample)

    describe = command("describe", help="a unified model writes a text about each file")
    describe.add_argument("weights", help="a unified model's .safetensors or .ckpt")
    describe.add_argument("files", nargs="+", help="media files of one medium the model describes")
    describe.add_argument(
        "--temperature", type=non_negative_float, default=0.0, help="0: greedy; above: sampled"
    )
    describe.add_argument("--seed", type=int, default=0)
    describe.set_defaults(run=_describe)

    ev = command("eval", help="the recipe's metrics for generated and real held-out data")
    sampling_options(ev)
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ev.add_argument(
        "--samples", type=positive_int, help="items to judge (default: eval.samples, else the held-out count)"
    )
    ev.set_defaults(run=_eval)

    export = command("export", help="a Lightning .ckpt -> .safetensors (EMA weights + recipe)")
    export.add_argument("checkpoint")
    export.add_argument("out")
    export.set_defaults(run=_export)

    conv = command("convert", help="a DiT or SD3 checkpoint -> mmdit .safetensors")
    conv.add_argument("kind", choices=["dit", "sd3"])
    conv.add_argument("source", help="a checkpoint file or a diffusers model folder")
    conv.add_argument("out", help="the .safetensors to write")
    conv.add_argument(
        "--heads", type=positive_int, help="attention heads, for a DiT whose width is not a preset's"
    )
    conv.set_defaults(run=_convert)

    listing = command("modalities", help="list the modalities: built-in, registered and plugins")
    listing.set_defaults(run=_modalities)

    recipes = command("recipes", help="list the bundled recipes")
    recipes.set_defaults(run=_recipes)
    return p


USER_ERRORS = (UserError, KeyError, ValueError, OSError, FloatingPointError)
"""What a user's mistake raises (a bad argument, recipe value or file, a run that diverged): printed as
one line. Anything else is a bug in mmdit and keeps its traceback."""


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as done:  # argparse has printed the usage and its message (or --help)
        return done.code if isinstance(done.code, int) else 2
    try:
        args.run(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        line = " ".join(str(message).split())  # one line, whatever the message's own line breaks
        console.print(Text.assemble(("error: ", "bold red"), line), soft_wrap=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
