"""A user's folder of media files, labelled by first-level sub-folder: shared by every folder dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from modalities.common.splits import split_indices


def labelled_files(
    root: Path, suffixes: tuple[str, ...], kind: str
) -> tuple[list[Path], list[int | None], dict]:
    """Files under `root` (recursively) whose suffix is one of `suffixes`, sorted by relative path (so a
    fixed-seed split does not depend on the file system's listing order).

    Returns (files, label per file, classes): with every file inside a first-level sub-folder, the
    sub-folder's name is the class (`classes = {"class": sorted names}`, labels index it); with every file
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
    return files, labels, ({"class": names} if names else {})


class MediaFolder(Dataset):
    """Files with one of `suffixes` under `root` (recursively), read lazily by `read(path) -> Tensor`.

    Labels: with every file inside a first-level sub-folder, the sub-folder's name is the class
    (`classes = {"class": sorted names}`); with every file directly in `root` there are no labels. A fixed
    seed splits the sorted file list into train and held-out. `kind` names the media in errors ("image").
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
    ) -> None:
        self.root, self.read = Path(root), read
        files, labels, self.classes = labelled_files(self.root, suffixes, kind)
        index = split_indices(len(files), split, heldout_fraction, seed)
        self.files = [files[i] for i in index]
        self.labels = [labels[i] for i in index]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        labels = {} if self.labels[i] is None else {"class": self.labels[i]}
        return {"media": self.read(self.files[i]), "labels": labels}
