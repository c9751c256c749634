"""A user's folder of media files, labelled by first-level sub-folder: shared by every folder dataset."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from modalities.common.splits import split_indices


@dataclass(frozen=True)
class FolderSource:
    """`data.source: {folder: PATH, label: NAME}`: a user's files under `path`, their first-level
    sub-folders naming the classes of label `label`."""

    path: Path
    label: str = "class"


def folder_source(source: str | Mapping[str, Any], kind: str, bundled: Sequence[str] = ()) -> FolderSource:
    """`source` as a folder source; anything else is an error that lists the valid sources (`bundled`
    names, then the folder form) and names an unknown key."""
    valid = ", ".join([*(repr(b) for b in bundled), "{'folder': PATH, 'label': NAME}"])
    if not isinstance(source, Mapping) or "folder" not in source:
        raise KeyError(f"unknown {kind} dataset {source!r}; valid sources: {valid}")
    unknown = set(source) - {"folder", "label"}
    if unknown:
        raise KeyError(f"{kind} folder source: unknown key(s) {sorted(unknown)}; valid sources: {valid}")
    return FolderSource(Path(source["folder"]), str(source.get("label", "class")))


def labelled_files(
    root: Path, suffixes: tuple[str, ...], kind: str, label: str = "class"
) -> tuple[list[Path], list[int | None], dict]:
    """Files under `root` (recursively) whose suffix is one of `suffixes`, sorted by relative path (so a
    fixed-seed split does not depend on the file system's listing order).

    Returns (files, label per file, classes): with every file inside a first-level sub-folder, the
    sub-folder's name is the class (`classes = {label: sorted names}`, labels index it); with every file
    directly in `root` there are no labels (None each, classes {}). A mix of both is an error."""
    if not root.is_dir():
        raise FileNotFoundError(f"{kind} folder {root} does not exist")
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise FileNotFoundError(f"no {kind} files ({', '.join(suffixes)}) under {root}")
    folders = [p.relative_to(root).parts[0] if p.parent != root else None for p in files]
    if None in folders and any(folders):
        stray = files[folders.index(None)]
        raise ValueError(
            f"{root} mixes {kind} files in class sub-folders with files directly in it (e.g. {stray}); "
            "put every file in a class sub-folder, or none"
        )
    names = sorted({f for f in folders if f is not None})
    labels = [names.index(f) if names else None for f in folders]
    return files, labels, ({label: names} if names else {})


class MediaFolder(Dataset):
    """Files with one of `suffixes` under `root` (recursively), read lazily by `read(path) -> Tensor`.

    Labels: with every file inside a first-level sub-folder, the sub-folder's name is the class of label
    `label` (`classes = {label: sorted names}`); with every file directly in `root` there are no labels.
    A fixed seed splits the sorted file list into train and held-out. `kind` names the media in errors.
    `check(path)`, when given, runs on every file of the split at once (a cheap header read), so a file
    that is not media is an error naming it before a run starts rather than at its first use.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        suffixes: tuple[str, ...],
        read: Callable[[Path], Tensor],
        kind: str,
        heldout_fraction: float = 0.1,
        seed: int = 0,
        label: str = "class",
        check: Callable[[Path], None] | None = None,
    ) -> None:
        self.root, self.read, self.label = Path(root), read, label
        files, labels, self.classes = labelled_files(self.root, suffixes, kind, label)
        index = split_indices(len(files), split, heldout_fraction, seed)
        self.files = [files[i] for i in index]
        self.labels = [labels[i] for i in index]
        for path in self.files if check else ():
            check(path)

    def __len__(self) -> int:
        return len(self.files)

    def item_labels(self, i: int) -> dict[str, int]:
        """Item i's labels, from its folder name: no file is read."""
        return {} if self.labels[i] is None else {self.label: self.labels[i]}

    def __getitem__(self, i: int) -> dict:
        labels = self.item_labels(i)
        try:
            media = self.read(self.files[i])
        except (ValueError, OSError) as err:
            if str(self.files[i]) in str(err):
                raise
            raise ValueError(f"cannot read {self.files[i]}: {err}") from err
        return {"media": media, "labels": labels}
