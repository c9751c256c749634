"""A run's loggers: `logs/metrics.csv` always (Lightning's CSVLogger), TensorBoard too when it is installed.
A run resumed into its own run directory appends to `metrics.csv` instead of replacing it, after dropping the
rows of the steps the resumed run trains again (logged after its checkpoint was saved)."""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class ContinuedWriter(ExperimentWriter):
    """Lightning's metrics.csv writer over an existing file: rows of steps up to `step` are kept (the others
    were logged after the checkpoint the run resumes), and new rows are appended under their header."""

    def __init__(self, log_dir: str, step: int):
        self.resumed_step = step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        # Lightning's writer deletes an existing metrics.csv here; a resumed run keeps its history.
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            header, rows = list(reader.fieldnames or []), list(reader)
        kept = [row for row in rows if int(row["step"]) < self.resumed_step]
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(kept)
        self.metrics_keys = sorted(header)


class ContinuedCSVLogger(CSVLogger):
    """CSVLogger(run_dir, logs) whose metrics.csv continues a resumed run's (`ContinuedWriter`)."""

    def __init__(self, run_dir: Path, step: int):
        super().__init__(run_dir, name="", version="logs")
        self.resumed_step = step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuedWriter(self.log_dir, self.resumed_step)
        return self._experiment


def loggers(run_dir: Path, resumed_step: int | None = None) -> list[Logger]:
    """The run's loggers; `resumed_step`: the optimizer step of the checkpoint a run resumes, whose
    metrics.csv in `run_dir` is continued."""
    csv_logger = (
        CSVLogger(run_dir, name="", version="logs")
        if resumed_step is None
        else ContinuedCSVLogger(run_dir, resumed_step)
    )
    found: list[Logger] = [csv_logger]
    try:
        import tensorboard  # noqa: F401

        found.append(TensorBoardLogger(run_dir, name="", version="tensorboard"))
    except ImportError:
        pass
    return found
