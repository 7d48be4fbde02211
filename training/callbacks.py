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

    ``between_updates``: call ``fn`` at the first point at or after ``next_at`` where nothing
    is half done: the start of the next rollout (after the update that used the last one) or
    the end of ``learn``. A checkpoint taken there holds every step collected so far in the
    model, so a resumed run loses no training pass (mid-rollout, the collected part of the
    rollout would be lost). The point is one rollout (PPO, A2C: ``n_steps`` x ``n_envs``
    steps) or one env step of every env (SAC, TD3) at most past ``next_at``; False from
    ``fn`` stops training at the next step.
    """

    def __init__(
        self,
        every: int,
        fn: Callable[[int], bool],
        next_at: int | None = None,
        *,
        between_updates: bool = False,
    ) -> None:
        super().__init__()
        self.every = every
        self.fn = fn
        self.next_at = next_at if next_at is not None else every
        self.between_updates = between_updates
        self._stop = False

    def _call_if_due(self) -> bool:
        if self.num_timesteps < self.next_at:
            return True
        while self.next_at <= self.num_timesteps:
            self.next_at += self.every
        return bool(self.fn(self.num_timesteps))

    def _on_step(self) -> bool:
        if self.between_updates:
            return not self._stop
        return self._call_if_due()

    def _on_rollout_start(self) -> None:
        if self.between_updates:
            self._between_updates()

    def _on_training_end(self) -> None:
        if self.between_updates:
            self._between_updates()

    def _between_updates(self) -> None:
        self.num_timesteps = self.model.num_timesteps  # (SB3 updates it in on_step only)
        self._stop = not self._call_if_due()


class RestoreLogValues(BaseCallback):
    """Puts back, when a resumed run's ``learn`` starts, what SB3's logger had recorded but
    not yet written at the checkpoint (:meth:`values_to_restore`): PPO and A2C record the
    ``train/`` metrics of an update and write them with the next rollout's ``rollout/``
    metrics, so without them a resumed run would log that step without its ``train/``
    metrics."""

    def __init__(self, values: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.values: dict[str, dict[str, Any]] | None = values

    @staticmethod
    def values_to_restore(logger: Any) -> dict[str, dict[str, Any]]:
        """What ``logger`` (an SB3 ``Logger``) has recorded since it last wrote."""
        return {
            "name_to_value": dict(logger.name_to_value),
            "name_to_count": dict(logger.name_to_count),
            "name_to_excluded": dict(logger.name_to_excluded),
        }

    def _on_training_start(self) -> None:
        if self.values is not None:  # (SB3 makes a new logger in learn() unless given one)
            for name, values in self.values.items():
                getattr(self.logger, name).update(values)
            self.values = None

    def _on_step(self) -> bool:
        return True


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
