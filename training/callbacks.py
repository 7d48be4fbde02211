"""SB3 callbacks and logger output used by :mod:`marketarena.training.train`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter


class MlflowOutputFormat(KVWriter):
    """Forwards SB3's logger values (``train/``, ``rollout/``, ``time/``) to the active
    MLflow run, at the step SB3 reports them."""

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0
    ) -> None:
        import mlflow

        metrics = {}
        for key, value in key_values.items():
            excluded = key_excluded.get(key) or ()
            if "mlflow" in excluded or isinstance(value, str | bool):
                continue
            if isinstance(value, int | float | np.integer | np.floating) and np.isfinite(value):
                metrics[key] = float(value)
        if metrics:
            mlflow.log_metrics(metrics, step=int(step))

    def close(self) -> None:
        pass


class EveryNTimesteps(BaseCallback):
    """Calls ``fn(num_timesteps)`` each time another ``every`` timesteps have passed.

    ``fn`` returns False to stop training. ``next_at`` survives a resume (it is part of the
    checkpoint state) so that evaluations and checkpoints keep their schedule.
    """

    def __init__(self, every: int, fn: Callable[[int], bool], next_at: int | None = None) -> None:
        super().__init__()
        self.every = every
        self.fn = fn
        self.next_at = next_at if next_at is not None else every

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next_at:
            return True
        while self.next_at <= self.num_timesteps:
            self.next_at += self.every
        return bool(self.fn(self.num_timesteps))


class RichProgress(BaseCallback):
    """A rich progress bar over the run's total timesteps, across every ``learn`` call of
    the run (one per curriculum stage); :meth:`close` ends it."""

    def __init__(self, total: int, start: int = 0, description: str = "training") -> None:
        super().__init__()
        self.total, self.start, self.description = total, start, description
        self._progress: Any = None
        self._task: Any = None
        self._validation: Any = None

    def _on_training_start(self) -> None:
        if self._progress is not None:  # the next stage of the same run
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            self.description, total=self.total, completed=self.start
        )

    def _on_step(self) -> bool:
        self._progress.update(self._task, completed=self.num_timesteps)
        return True

    def _on_training_end(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.num_timesteps)

    def validation(self, step: int, total: int) -> None:
        """Show a validation backtest's progress (``step`` of ``total`` days) on a second
        line, removed when it completes; the training bar's clock keeps running meanwhile."""
        if self._progress is None:
            return
        if self._validation is None:
            self._validation = self._progress.add_task("validation backtest", total=total)
        self._progress.update(self._validation, completed=step, total=total)
        if step >= total:
            self._progress.remove_task(self._validation)
            self._validation = None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
