"""Text as a discrete stream: UTF-8 bytes plus three special ids, no vocabulary file to download.

Ids 0..255 are bytes; PAD, BOS and EOS follow. A text is [BOS, bytes..., EOS] padded with PAD to
`max_length`; any UTF-8 string round-trips exactly. The backbone embeds the ids and predicts next-token
logits (a causal stream, see `mmdit.model.masks`).

Captions: a text stream can be made from another stream's labels with templates ("a handwritten {digit}",
"the digit {digit_word}"), so any labelled dataset becomes a captioned one; held-out templates test
phrasings the model never saw.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Formatter
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import Dataset

from mmdit.contract import DiscreteAdapter, StreamSpec, Tokens
from modalities.common.folders import MediaFolder, folder_source
from modalities.common.splits import SPLITS

PAD, BOS, EOS = 256, 257, 258
VOCAB = 259


def encode_text(text: str, max_length: int) -> Tensor:
    """A string -> ids [max_length] long: BOS, its UTF-8 bytes, EOS, then PAD."""
    data = list(text.encode("utf-8"))
    if len(data) + 2 > max_length:
        raise ValueError(
            f"text {text[:40]!r} is {len(data)} UTF-8 bytes; with BOS and EOS it needs max_length >= "
            f"{len(data) + 2} (max_length is {max_length})"
        )
    return torch.tensor([BOS, *data, EOS] + [PAD] * (max_length - len(data) - 2), dtype=torch.long)


def decode_text(ids: Tensor | Sequence[int]) -> str:
    """Ids [L] -> the string between BOS and the first EOS (PAD and specials skipped); invalid UTF-8 from a
    sampled byte sequence becomes U+FFFD rather than an error."""
    data = bytearray()
    for i in ids.tolist() if isinstance(ids, Tensor) else ids:
        if i == EOS:
            break
        if i < 256:
            data.append(i)
    return data.decode("utf-8", errors="replace")


def expand_alternatives(template: str) -> list[str]:
    """ "[a|the digit] {digit}" -> ["a {digit}", "the digit {digit}"]: every choice of every [x|y|...]
    group, so a few lines of a recipe give many phrasings (an empty choice, "[, by hand|]", is allowed)."""
    start = template.find("[")
    if start < 0:
        return [template]
    end = template.find("]", start)
    if end < 0:
        raise ValueError(f"caption template {template!r} opens [ without closing it")
    head, choices, tail = template[:start], template[start + 1 : end].split("|"), template[end + 1 :]
    return [head + choice + rest for choice in choices for rest in expand_alternatives(tail)]


class TextAdapter(DiscreteAdapter):
    """Texts as ids [B, max_length] <-> discrete tokens with 1D positions.

    templates: caption templates, a list (used for both splits) or {"train": [...], "heldout": [...]}; a
               field {label} is the class name, {label_word} the class's entry in `words`; [x|y] groups
               give alternatives (`expand_alternatives`).
    words:     {label: [a word per class]}, e.g. {"digit": ["zero", "one", ...]}.
    """

    name = "text"
    file_suffix = ".txt"
    end_id = EOS
    never_written = (PAD, BOS)

    def __init__(
        self,
        max_length: int = 32,
        templates: Sequence[str] | Mapping[str, Sequence[str]] = (),
        words: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if max_length < 3:
            raise ValueError(f"text max_length must leave room for BOS, a byte and EOS, got {max_length}")
        self.max_length = max_length
        if isinstance(templates, Mapping):
            unknown = set(templates) - set(SPLITS)
            if unknown:
                raise KeyError(f"caption templates are keyed by split {SPLITS}; got {sorted(unknown)}")
            given = {split: list(templates.get(split, ())) for split in SPLITS}
        else:
            given = dict.fromkeys(SPLITS, list(templates))
        self.templates = {
            split: [t for line in lines for t in expand_alternatives(line)] for split, lines in given.items()
        }
        self.words = {k: list(v) for k, v in (words or {}).items()}

    def stream(self, name: str) -> StreamSpec:
        return StreamSpec(name, features=1, vocab=VOCAB, positions="rope", axes=1)

    def to_ids(self, value: str) -> Tensor:
        return encode_text(value, self.max_length)

    def from_ids(self, ids: Tensor) -> str:
        return decode_text(ids)

    def encode(self, media: Tensor, numbers: Mapping[str, Tensor] | None = None) -> Tokens:
        """ids [B, L] long -> Tokens(x = ids, pos [B, L, 1], mask = not PAD). Texts take no numbers."""
        if media.ndim != 2 or torch.is_floating_point(media):
            raise ValueError(f"texts must be integer ids [B, L], got {media.dtype} {tuple(media.shape)}")
        pos = torch.arange(media.shape[1], device=media.device, dtype=torch.float32)
        return Tokens(media, pos.expand(media.shape[0], -1)[..., None].clone(), media != PAD)

    def decode(self, tokens: Tokens) -> Tensor:
        return tokens.x

    def layout(self, batch_size: int, numbers: Mapping[str, Tensor] | None = None) -> Tokens:
        """The start of generation: BOS, then PAD up to max_length."""
        ids = torch.full((batch_size, self.max_length), PAD, dtype=torch.long)
        ids[:, 0] = BOS
        return self.encode(ids)

    def load(self, path: str | Path) -> Tensor:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text: {err}") from err
        return encode_text(text, self.max_length)

    def save(self, item: Tensor, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(decode_text(item) + "\n", encoding="utf-8")
        return path

    def preview(self, media: Tensor, path: str | Path, columns: int | None = None) -> Path:
        """The texts of a batch, one per line, as a PNG (`columns` is unused: one text per line)."""
        lines = [f"{i}: {decode_text(ids)}" for i, ids in enumerate(media)]
        figure = Figure(figsize=(6, 0.3 * len(lines) + 0.4))
        figure.text(0.02, 0.98, "\n".join(lines), va="top", family="monospace", fontsize=9)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        return path

    def dataset(self, source: str | Mapping[str, Any], split: str, seed: int = 0) -> Dataset:
        """{"folder": PATH, "label": NAME} of UTF-8 .txt files, one text each (sub-folders name classes)."""
        folder = folder_source(source, "text")
        return MediaFolder(folder.path, split, (".txt",), self.load, "text", seed=seed, label=folder.label)

    def evaluate(self, generated, labels, train, heldout):
        raise ValueError("texts are judged in a unified recipe (`mmdit eval` names the described class)")

    # captions ------------------------------------------------------------------------------------------

    def caption(
        self, labels: Mapping[str, int], classes: Mapping[str, list[str]], split: str, index: int
    ) -> str:
        templates = self.templates[split]
        if not templates:
            raise ValueError(f"the text stream has no caption templates for the {split} split")
        return self.fill(templates[index % len(templates)], labels, classes)

    def fill(self, template: str, labels: Mapping[str, int], classes: Mapping[str, list[str]]) -> str:
        """Fill `template` with class names ({digit}) and words ({digit_word}) of the item's labels."""
        fields = {}
        for key, index in labels.items():
            fields[key] = classes[key][index]
            if key in self.words:
                fields[f"{key}_word"] = self.words[key][index]
        try:
            return template.format(**fields)
        except KeyError as err:
            raise KeyError(
                f"caption template {template!r} uses {err.args[0]!r}; fields: {sorted(fields)}"
            ) from err

    def captioned(self, dataset: Dataset, split: str, media_stream: str, own_stream: str) -> Dataset:
        if not self.templates[split]:
            raise ValueError(f"text stream {own_stream!r} has no caption templates for the {split} split")
        return CaptionedDataset(dataset, self, split, media_stream, own_stream)

    def caption_keys(self) -> list[str]:
        """The labels every template names ({digit} or {digit_word}), in order of first use."""
        keys: dict[str, None] = {}
        templates = [t for split in SPLITS for t in self.templates[split]]
        for template in templates:
            for _, field, _, _ in Formatter().parse(template):
                if field:
                    keys.setdefault(field.removesuffix("_word"), None)
        return [k for k in keys if all(_names(t, k) for t in templates)]

    def named_classes(self, value: str, key: str, classes: Mapping[str, list[str]]) -> list[int]:
        """The classes of `key` a text names, by class name or word, as whole words."""
        tokens = set(value.lower().replace(".", " ").replace(",", " ").split())
        spellings = [[classes[key][i].lower()] + ([self.words[key][i].lower()] if key in self.words else [])
                     for i in range(len(classes[key]))]  # fmt: skip
        return [i for i, names in enumerate(spellings) if tokens & set(names)]


def _names(template: str, key: str) -> bool:
    """Whether `template` fills in label `key` (its class name or its word)."""
    return any(field in (key, f"{key}_word") for _, field, _, _ in Formatter().parse(template))


class CaptionedDataset(Dataset):
    """Items {"media": {media_stream: media, text_stream: ids [L]}, "labels": ..., and the base item's
    other keys (numbers)}, or the base's media streams and the text when its media are already keyed by
    stream (a joined dataset): a random training
    template per access (train), or template i mod count (held-out: fixed phrasings)."""

    def __init__(self, base: Dataset, text: TextAdapter, split: str, media_stream: str, text_stream: str):
        self.base, self.text, self.split = base, text, split
        self.media_stream, self.text_stream = media_stream, text_stream
        self.classes = base.classes

    def __len__(self) -> int:
        return len(self.base)

    def template(self, i: int) -> str:
        templates = self.text.templates[self.split]
        return random.choice(templates) if self.split == "train" else templates[i % len(templates)]

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        words = self.text.fill(self.template(i), item["labels"], self.classes)
        ids = encode_text(words, self.text.max_length)
        media = item["media"] if isinstance(item["media"], Mapping) else {self.media_stream: item["media"]}
        return {**item, "media": {**media, self.text_stream: ids}}
