"""Hyperparameter tuning with Optuna: pruned, leak-free, resumable, distributed.

Every trial trains with :func:`marketarena.training.train.train` and is scored on validation
data only — the config's validation split, or walk-forward folds inside the train +
validation range — never the test split. Intermediate validation scores feed the pruner;
a NaN score or a diverging run prunes the trial instead of crashing the study.

Storage: a local journal file (``optuna.journal``, survives restarts, safe for several
processes on one machine) by default, or any URL Optuna supports — ``sqlite:///...``,
``postgresql://user:pass@host/db`` — for many workers on many machines: run the same
``marketarena tune --study NAME --storage URL`` on each, and they share the study (Optuna's
own distributed mode; a study is always created with ``load_if_exists``, so rerunning
resumes it). With an RDB storage, workers send heartbeats, so a killed worker's trial is
marked failed and the others carry on.

On Ray (``backend``, ``marketarena tune --backend ray``): Ray Tune runs the trials, each a
Ray actor with the config's torch threads as its CPUs, sampled by Optuna's own sampler
(``OptunaSearch`` with the same TPE or random sampler and search space) and stopped early by
ASHA (``pruner: none`` runs every trial to its end), with the same objective, folds, seeds and
MLflow nesting; Ray Tune keeps its state under ``<output>/<study>/ray``, not in an Optuna
storage. The best config, importances, plots and the optional retrain are then made as here,
from the trials Ray ran. Rerunning the same command resumes the study, as on the Optuna path:
an interrupted experiment (Ctrl-C, a killed driver) is restored with ``Tuner.restore`` (trials
that finished keep their results, unfinished ones run again); after a finished one,
``n_trials`` more run in a new experiment (``ray-2``, ...) whose sampler is warm-started with
every earlier trial. ``<output>/<study>/ray_study.json`` records the experiments, the trials
of the finished ones and the one MLflow study run that all of them share; the study made at
the end covers every trial of every experiment, numbered in order. Ray Tune runs trials
asynchronously (which trial the sampler has seen when it draws the next depends on timing),
so a resumed Ray study is not bit-identical to an uninterrupted one; the Optuna journal path
with ``n_jobs=1`` is.

Tracking: the study has one MLflow run; each trial's training run is nested under it. At
the end the study run records the best trial, parameter importances and Optuna's plots, and
the best configuration is written as a ready-to-train YAML. With ``retrain``, the best
configuration is trained again on (almost all of) train + validation and evaluated once on
the test split, with the deflated Sharpe ratio computed from the number of trials.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import re
import signal
import statistics
import threading
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from marketarena.envs.errors import ConfigError, MarketArenaError
from marketarena.evaluation import metrics, tracking
from marketarena.evaluation.backends import LOCAL, Backend, ray_connection
from marketarena.training import search_spaces
from marketarena.training.config import Config, build_config, merge
from marketarena.training.train import load_universe, split_ranges, train

DEFAULT_STORAGE = "optuna.journal"
STUDY_RUN_ATTR = "mlflow_parent_run_id"


class StorageError(MarketArenaError, RuntimeError):
    """The Optuna storage cannot be reached or opened (the message names it without its
    password)."""


@dataclass
class TuneResult:
    study_name: str
    storage: str
    n_trials: int
    n_complete: int
    n_pruned: int
    n_failed: int
    best_value: float | None
    best_params: dict[str, Any]
    best_config_path: Path | None
    study_run_id: str | None
    test: dict[str, float] = field(default_factory=dict)


class _InterruptWithoutTraceback(logging.Filter):
    """Optuna logs a trial stopped by Ctrl-C as failed with the whole traceback; the trial is
    marked failed either way, and the interruption is the user's own: one line says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.msg, record.args, record.exc_info = (
                "%s",
                (record.getMessage().split(" because of")[0] + ": interrupted (Ctrl-C)",),
                None,
            )
        return True


_INTERRUPT_FILTER = _InterruptWithoutTraceback()


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's logging at WARNING, and a trial stopped by Ctrl-C in one line, for the call
    only: the caller's verbosity and logging filters are restored afterwards."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optimize_log = logging.getLogger("optuna.study._optimize")
    added = _INTERRUPT_FILTER not in optimize_log.filters  # a nested call leaves it in place
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optimize_log.addFilter(_INTERRUPT_FILTER)
    try:
        yield
    finally:
        if added:
            optimize_log.removeFilter(_INTERRUPT_FILTER)
        optuna.logging.set_verbosity(verbosity)


#: connection parameters that hold secrets, in every form libpq (and SQLAlchemy) accepts
_SECRET_PARAMETERS = ("password", "passwd", "pwd", "sslpassword", "sslkey_password")
_SECRET_KEYWORD = re.compile(
    r"(\b(?:" + "|".join(_SECRET_PARAMETERS) + r")\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)",
    re.IGNORECASE,
)


def _redact(url: str) -> str:
    """A storage URL or connection string with every password replaced by ``***``: the
    ``user:password@`` of a URL, ``?password=`` (and ``sslpassword``, ...) in its query, and
    ``password=...`` in a libpq keyword/value string (``host=h password='a b'``)."""
    if "://" not in url:
        return _SECRET_KEYWORD.sub(r"\1***", url)
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = [
        (key, "***" if key.lower() in _SECRET_PARAMETERS else value)
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ]
    encoded = urllib.parse.urlencode(query, safe="*")
    # by hand, not urlunsplit: sqlite:///file has an empty host that must keep its //
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{encoded}" if parts.query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


_NON_FINITE = re.compile(r"\b(nan|inf|infinity)\b", re.IGNORECASE)


def _public_dict(config: Config) -> dict[str, Any]:
    """``config.to_dict()`` with the storage URL's password redacted: what gets logged or
    written out (MLflow params, trial configs, best_config.yaml)."""
    data = config.to_dict()
    if data["tuning"].get("storage"):
        data["tuning"]["storage"] = _redact(data["tuning"]["storage"])
    return data


def _with_driver(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare ``postgresql://`` URL as psycopg 3; the ``postgres`` extra
    installs psycopg2: name it when psycopg 3 is not installed."""
    import importlib.util

    find = importlib.util.find_spec
    if url.startswith("postgresql://") and find("psycopg") is None and find("psycopg2"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def make_storage(url: str | None, heartbeat_interval: int = 10, grace_period: int = 30) -> Any:
    """An Optuna storage from a URL or a journal file path; unreachable storage is an error.

    RDB workers send a heartbeat every ``heartbeat_interval`` seconds; a running trial without
    one for ``grace_period`` seconds (its worker died) is marked failed by the others."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    url = url or DEFAULT_STORAGE
    if "://" not in url:
        return JournalStorage(JournalFileBackend(str(Path(url))))
    try:
        # heartbeats are "experimental" in Optuna; we use them
        with _quiet_optuna(), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                _with_driver(url),
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                engine_kwargs={"pool_pre_ping": True},
            )
    except ImportError as exc:
        raise StorageError(f"storage {_redact(url)} needs a database driver: {exc}") from None
    except Exception as exc:  # sqlalchemy's connection errors, bad URLs
        raise StorageError(
            f"cannot open the Optuna storage {_redact(url)}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}"
        ) from None


def _sampler_class(name: str) -> tuple[Any, dict[str, Any]]:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler, {"multivariate": True, "n_startup_trials": 5}
    if name == "random":
        return optuna.samplers.RandomSampler, {}
    raise ConfigError(f"unknown sampler {name!r}; choose tpe or random")


def make_sampler(name: str, seed: int) -> Any:
    """The sampler, its random stream seeded at the first trial it draws (see
    :func:`trial_seed`)."""
    base: Any
    base, kwargs = _sampler_class(name)

    class FirstTrialSeeded(base):
        _seeded = False

        def before_trial(self, study: Any, trial: Any) -> None:
            if not self._seeded:
                self._seeded = True
                state = trial_seed(seed, trial.number)
                self._rng.rng.seed(state)  # TPE's own draws, or the random sampler's
                inner = getattr(self, "_random_sampler", None)  # TPE's start-up trials
                if inner is not None:
                    inner._rng.rng.seed(state)
            super().before_trial(study, trial)

    return FirstTrialSeeded(seed=seed, **kwargs)


def trial_seed(seed: int, first_trial: int) -> int:
    """The seed of a sampler whose first trial is number ``first_trial``. Trial numbers are
    unique in a study, so workers that join one at the same moment, or a study resumed, never
    replay another stream's draws; a study run by one worker stays reproducible."""
    return int(np.random.SeedSequence([seed, first_trial]).generate_state(1)[0])


def make_pruner(name: str) -> Any:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {name!r}; choose median, halving or none")


def fold_splits(config: Config) -> list[dict[str, str]]:
    """``env.splits`` for each fold: the config's own split when ``folds == 1``, else
    walk-forward folds whose validation ranges tile the end of train + validation. Every
    fold ends before the test split."""
    data = load_universe(config)
    ranges = split_ranges(config, data)
    splits = config.env.splits
    if config.tuning.folds == 1:
        return [splits.model_dump()]
    days = config.tuning.fold_validation_days
    first = data.index_of(ranges["train"][0])
    test_start = data.index_of(ranges["test"][0])
    out = []
    for k in range(config.tuning.folds, 0, -1):
        v_start = test_start - k * days
        v_end = v_start + days  # exclusive: the next fold (or the test split) starts here
        if v_start - first < 2 * days:
            raise ConfigError(
                f"tuning.folds={config.tuning.folds} with {days}-day validation ranges leaves "
                "too little training data before the first fold"
            )
        out.append(
            {
                "start": str(data.dates[first]),
                "validation_start": str(data.dates[v_start]),
                "test_start": str(data.dates[v_end]),
                "end": str(data.dates[v_end]),
            }
        )
    return out


class Objective:
    """One trial: sample, then train once per (fold, seed) and score on validation."""

    def __init__(self, config: Config, out_dir: Path, study_run_id: str | None) -> None:
        self.config = config
        self.base = _public_dict(config)
        self.out_dir = out_dir
        self.study_run_id = study_run_id
        self.space = search_spaces.space_for(config.algo.name, config.tuning.search)
        self.folds = fold_splits(config)
        self.on_result: Callable[[int, str, float | None], None] | None = None

    def trial_config(
        self, params: dict[str, Any], fold: dict[str, str], seed: int, trial_number: int | str
    ) -> Config:
        """A trial's training config (``trial_number``: its number, or its id on Ray Tune,
        names the run)."""
        overrides = search_spaces.to_overrides(
            self.config.algo.name, params, self.config.algo.n_envs
        )
        data = merge(copy.deepcopy(self.base), overrides)
        data["seed"] = seed
        data["env"]["splits"] = fold
        data["name"] = f"{self.config.name}-t{trial_number}"
        data["training"]["output_dir"] = str(self.out_dir / "trials")
        data["training"]["progress_bar"] = False
        data["training"]["validation_report"] = False  # the study's report compares trials
        data["training"]["selection_metric"] = self.config.tuning.objective
        return build_config(data, f"trial {trial_number}")

    def __call__(self, trial: Any) -> float:
        import optuna

        params = search_spaces.sample(trial, self.space)
        readable = search_spaces.to_overrides(
            self.config.algo.name, params, self.config.algo.n_envs
        )
        for section, values in readable.items():
            for key, value in values.items():
                if key == "hyperparameters":
                    for hp, v in value.items():
                        trial.set_user_attr(f"algo.hyperparameters.{hp}", v)
                else:
                    trial.set_user_attr(f"{section}.{key}", value)
        scores = []
        first = True
        for fold_index, fold in enumerate(self.folds):
            for seed in self.config.tuning.seeds:
                cfg = self.trial_config(params, fold, seed, trial.number)
                report = self._reporter(trial) if first else None
                try:
                    result = train(
                        cfg, on_evaluation=report, mlflow_parent_run_id=self.study_run_id
                    )
                except optuna.TrialPruned:
                    raise
                except (ValueError, RuntimeError) as exc:
                    # e.g. torch: "found invalid values: tensor([[nan, nan]])"
                    if _NON_FINITE.search(str(exc)):
                        raise optuna.TrialPruned(f"diverged: {exc}") from None
                    raise
                first = False
                score = result.best_validation.get(self.config.tuning.objective)
                if score is None or not math.isfinite(score):
                    raise optuna.TrialPruned(f"no finite validation score (fold {fold_index})")
                scores.append(score)
        trial.set_user_attr("scores", scores)
        return float(statistics.median(scores))

    @staticmethod
    def _reporter(trial: Any) -> Callable[[int, float], bool]:
        import optuna

        def report(step: int, score: float) -> bool:
            if not math.isfinite(score):
                raise optuna.TrialPruned("NaN validation score")
            trial.report(score, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")
            return True

        return report


def _study_run(study: Any, config: Config) -> str | None:
    """The study's MLflow run: created by the first worker, found by the others."""
    if not config.mlflow.enabled:
        return None
    run_id = study.user_attrs.get(STUDY_RUN_ATTR)
    if run_id:
        return run_id
    run_id = _new_study_run(study.study_name, config)
    study.set_user_attr(STUDY_RUN_ATTR, run_id)
    return study.user_attrs.get(STUDY_RUN_ATTR, run_id)


def _new_study_run(name: str, config: Config, tags: dict[str, str] | None = None) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    tracking.set_experiment(config.mlflow.experiment)
    with mlflow.start_run(run_name=f"study:{name}") as run:
        mlflow.set_tags(
            {"kind": "tuning", "study": name, "git_sha": tracking.git_sha(), **(tags or {})}
        )
        mlflow.log_params(tracking.flatten({"base": _public_dict(config)}))
    return str(run.info.run_id)


def tune(
    config: Config,
    *,
    out_dir: str | Path = "tuning",
    on_trial: Callable[[Any], None] | None = None,
    backend: Backend = LOCAL,
) -> TuneResult:
    """Run ``config.tuning.n_trials`` more trials (or until ``timeout``) on the shared study.

    ``backend``: local (the default) runs Optuna here, ``n_jobs`` trials at once, on the
    study in ``tuning.storage``; Ray runs the trials on Ray Tune (:func:`tune_on_ray`)."""
    import optuna

    t = config.tuning
    study_name = t.study or config.name
    # bad input (search space, folds) fails before a study or an MLflow run is created
    search_spaces.space_for(config.algo.name, t.search)
    fold_splits(config)
    backend.validate()
    if backend.is_ray:
        return tune_on_ray(config, out_dir=out_dir, on_trial=on_trial, backend=backend)
    storage = make_storage(t.storage, t.heartbeat_interval, t.grace_period)
    out = Path(out_dir).resolve() / study_name
    out.mkdir(parents=True, exist_ok=True)
    with _quiet_optuna():
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            direction="maximize",
            sampler=make_sampler(t.sampler, t.sampler_seed),
            pruner=make_pruner(t.pruner),
            load_if_exists=True,
        )
        study.set_user_attr("objective", t.objective)
        run_id = _study_run(study, config)
        objective = Objective(config, out, run_id)
        callbacks = [lambda study, trial: on_trial(trial)] if on_trial else []
        study.optimize(
            objective,
            n_trials=t.n_trials,
            timeout=t.timeout,
            n_jobs=t.n_jobs,
            callbacks=callbacks,
            catch=(),
        )
        return finish(study, config, out, run_id, storage_url=t.storage or DEFAULT_STORAGE)


def finish(
    study: Any, config: Config, out: Path, run_id: str | None, *, storage_url: str
) -> TuneResult:
    """Best config as YAML, importances and plots into the study run, optional retrain."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    states = [tr.state for tr in trials]
    complete = [tr for tr in trials if tr.state == optuna.trial.TrialState.COMPLETE]
    result = TuneResult(
        study_name=study.study_name,
        storage=_redact(storage_url),
        n_trials=len(trials),
        n_complete=len(complete),
        n_pruned=states.count(optuna.trial.TrialState.PRUNED),
        n_failed=states.count(optuna.trial.TrialState.FAIL),
        best_value=None,
        best_params={},
        best_config_path=None,
        study_run_id=run_id,
    )
    if not complete:
        return result
    best = study.best_trial
    result.best_value, result.best_params = best.value, dict(best.params)
    objective = Objective(config, out, run_id)
    # the trial trained with the fixed parameters too, which its params do not record
    params = {**search_spaces.fixed_values(objective.space), **best.params}
    best_config = objective.trial_config(
        params, config.env.splits.model_dump(), config.seed, best.number
    )
    data = best_config.to_dict()
    data["name"] = f"{config.name}-best"
    data["training"]["output_dir"] = config.training.output_dir
    data["training"]["progress_bar"] = True
    data["training"]["validation_report"] = True
    path = out / "best_config.yaml"
    header = (
        f"# best of {len(complete)} complete trials of study {study.study_name}: "
        f"{config.tuning.objective} {best.value:.4f} (trial {best.number})\n"
    )
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    result.best_config_path = path
    artifacts = [path, *_plots(study, out)]
    importances: dict[str, float] = {}
    if len(complete) >= 2:
        try:
            with warnings.catch_warnings():  # with few trials Optuna warns and reports them equal
                warnings.simplefilter("ignore", UserWarning)
                importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):
            importances = {}
    if config.tuning.retrain:
        result.test = retrain_and_test(build_config(data, str(path)), study, out)
    if run_id:
        import mlflow

        mlflow.set_tracking_uri(tracking.tracking_uri())
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metric(f"best/{config.tuning.objective}", float(best.value))
            mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
            mlflow.log_metrics({f"importance/{k}": float(v) for k, v in importances.items()})
            mlflow.log_metrics(
                {
                    "trials/complete": len(complete),
                    "trials/pruned": result.n_pruned,
                    "trials/failed": result.n_failed,
                }
            )
            if result.test:
                mlflow.log_metrics(
                    {
                        f"test/{k}": v
                        for k, v in result.test.items()
                        if isinstance(v, float) and math.isfinite(v)
                    }
                )
            for artifact in artifacts:
                mlflow.log_artifact(str(artifact))
    return result


def _plots(study: Any, out: Path) -> list[Path]:
    """Optuna's plots as PNGs. Optuna draws through pyplot on the caller's backend (it is
    never changed here), and every figure it opens is closed again."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as vis

    paths = []
    for name, fn in (
        ("optimization_history", vis.plot_optimization_history),
        ("param_importances", vis.plot_param_importances),
        ("parallel_coordinate", vis.plot_parallel_coordinate),
    ):
        open_before = set(plt.get_fignums())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)  # few trials: equal importances
                ax = fn(study)
            fig = ax.figure.figure  # the root figure (a subfigure's is its parent's)
            path = out / f"{name}.png"
            fig.savefig(path, dpi=90, bbox_inches="tight")
            paths.append(path)
        # importances need two complete trials, and Optuna asserts that their labels are
        # drawn on an Agg-based backend (a vector one such as svg leaves that plot out)
        except (ValueError, RuntimeError, AssertionError):
            pass
        finally:
            for number in set(plt.get_fignums()) - open_before:
                plt.close(number)
    return paths


def retrain_and_test(best: Config, study: Any, out: Path) -> dict[str, float]:
    """Train the best config on train + validation (all but its last quarter, which picks the
    model) and evaluate once on the test split; deflate its Sharpe by the number of trials."""
    import optuna

    from marketarena.evaluation.evaluate import EvaluationConfig, evaluate

    data = load_universe(best)
    ranges = split_ranges(best, data)
    test_start = data.index_of(ranges["test"][0])
    data_dict = best.to_dict()
    data_dict["env"]["splits"]["validation_start"] = str(data.dates[test_start - 63])
    result = train(build_config(data_dict, "retrain"))
    model = result.best_model_path or result.model_path
    report = evaluate(
        EvaluationConfig(
            agents=(str(Path(model).parent),),
            data=best.env.data,
            start=ranges["test"][0],
            end=ranges["test"][1],
            benchmark=None,
            rules=best.env.rules,
            title=f"{best.name}: test split, evaluated once",
        )
    )
    report.write(out / "test_report")
    row = report.rows()[0]
    values = [
        t.value
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    ]
    # the trials' spread of Sharpe ratios, when Sharpe is what they were scored on
    sharpe_scored = study.user_attrs.get("objective", "sharpe") == "sharpe"
    variance = float(np.var(values, ddof=1)) if len(values) > 1 and sharpe_scored else None
    dsr = metrics.deflated_sharpe_ratio(
        row.representative.returns, n_trials=max(len(values), 1), trials_sharpe_variance=variance
    )
    return {
        **{k: row.metrics[k] for k in ("sharpe", "total_return", "max_drawdown", "cagr")},
        "deflated_sharpe": float(dsr),
        "n_trials": float(len(values)),
    }


# ------------------------------------------------------------------------------ Ray Tune
#: the ``stopped`` tag of a training run whose trial ASHA stopped
STOPPED_BY_ASHA = "pruned: stopped by ASHA"


def _optuna_distributions(space: dict[str, Any]) -> dict[str, Any]:
    """The sampled parameters of a search space as Optuna distributions."""
    import optuna.distributions as d

    out: dict[str, Any] = {}
    for name, dist in space.items():
        if isinstance(dist, search_spaces.Float):
            out[name] = d.FloatDistribution(dist.low, dist.high, log=dist.log)
        elif isinstance(dist, search_spaces.Int):
            out[name] = d.IntDistribution(dist.low, dist.high, log=dist.log)
        elif isinstance(dist, search_spaces.Categorical):
            out[name] = d.CategoricalDistribution(list(dist.choices))
    return out


def tune_on_ray(
    config: Config,
    *,
    out_dir: str | Path = "tuning",
    on_trial: Callable[[Any], None] | None = None,
    backend: Backend,
) -> TuneResult:
    """The study on Ray Tune (see the module docstring): ``n_trials`` trials (or until
    ``timeout``), ``n_jobs`` at once when above 1 (else as many as the cluster's CPUs take).

    Every trial reports each validation score of its first (fold, seed) to ASHA, then the
    median over all of them (its value, as in :class:`Objective`) as its final result. A
    trial ASHA stopped is recorded as pruned, one that raised as failed; their training runs
    left open in MLflow are closed as killed.

    Resumable (see the module docstring): an unfinished last experiment is restored, else a
    new one runs ``n_trials`` more, warm-started with the earlier trials. Ctrl-C: Ray Tune
    saves the experiment's state and returns; this raises :class:`KeyboardInterrupt` so that
    the caller says how to resume.
    """
    import optuna
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    t = config.tuning
    if t.storage:
        raise ConfigError(
            "tuning.storage (--storage) is the Optuna backend's: Ray Tune keeps a study's "
            "state under its output folder; leave it out with --backend ray"
        )
    study_name = t.study or config.name
    out = Path(out_dir).resolve() / study_name
    out.mkdir(parents=True, exist_ok=True)
    space = search_spaces.space_for(config.algo.name, t.search)
    distributions = _optuna_distributions(space)
    fixed = search_spaces.fixed_values(space)
    state = _RayState.load(out)
    if state.run_id is None and config.mlflow.enabled:
        state.run_id = _new_study_run(study_name, config, {"backend": "ray"})
    run_id = state.run_id
    objective = Objective(config, out, run_id)
    objective_name = t.objective
    evaluations = max(1, config.algo.total_timesteps // config.training.eval_every)
    cwd = str(Path.cwd())
    uri = tracking.tracking_uri()

    def trainable(params: dict[str, Any]) -> None:
        """One trial, in a Ray actor: train per (fold, seed), report to Ray Tune."""
        import os

        from ray import tune as session

        os.chdir(cwd)  # Ray Tune starts a trial in a folder of its own
        os.environ["MLFLOW_TRACKING_URI"] = uri
        trial_id = session.get_context().get_trial_id()  # names its runs: <name>-t<id>
        sampled = {**fixed, **params}
        scores: list[float] = []

        nan = []

        def report(step: int, score: float) -> bool:
            if not math.isfinite(score):
                nan.append(step)  # a NaN validation score ends the trial: pruned
                return False
            try:
                session.report({"score": score, "step": step, "final": False})
            except SystemExit:  # Ray Tune's way to stop a trial its scheduler stopped
                raise tracking.RunStopped(STOPPED_BY_ASHA) from None
            return True

        for fold in objective.folds:
            for seed in config.tuning.seeds:
                cfg = objective.trial_config(sampled, fold, seed, trial_id)
                try:
                    result = train(
                        cfg,
                        on_evaluation=report if not scores else None,
                        mlflow_parent_run_id=run_id,
                    )
                except tracking.RunStopped:
                    raise SystemExit(0) from None  # the run is closed: as Ray Tune asked
                except (ValueError, RuntimeError) as exc:
                    if _NON_FINITE.search(str(exc)):
                        return  # diverged: pruned
                    raise
                score = result.best_validation.get(objective_name)
                if nan or score is None or not math.isfinite(score):
                    return  # no final result: recorded as pruned
                scores.append(float(score))
        session.report({"score": float(statistics.median(scores)), "final": True, "scores": scores})

    from ray.tune import RunConfig, TuneConfig, Tuner

    resources = ray_tune.with_resources(trainable, {"cpu": config.algo.torch_threads})
    with ray_connection(backend), _quiet_optuna():
        unfinished = state.unfinished
        if unfinished is not None and Tuner.can_restore(str(out / unfinished)):
            # an interrupted (or killed) experiment: its finished trials keep their results,
            # the others run again; its searcher and scheduler come back from its state
            if run_id is not None:
                _close_killed_runs(run_id, "interrupted: the trial runs again on resume")
            with _quiet_ray_resume():
                tuner = Tuner.restore(
                    str(out / unfinished), trainable=resources, resume_unfinished=True
                )
            name = unfinished
        else:
            # a new experiment next to the earlier ones, its sampler warm-started with their
            # trials and seeded by how many there were (as a resumed Optuna study's is), so
            # that it never replays the first experiment's draws
            name = state.next_name(out)
            base, kwargs = _sampler_class(t.sampler)
            seed = (
                t.sampler_seed
                if not state.trials
                else trial_seed(t.sampler_seed, len(state.trials))
            )
            sampler = base(seed=seed, **kwargs)
            searcher = OptunaSearch(
                space=distributions, metric="score", mode="max", sampler=sampler
            )
            for record in state.trials:
                if record["state"] != "FAIL" and set(record["params"]) == set(distributions):
                    searcher.add_evaluated_point(
                        record["params"],
                        record["value"],
                        pruned=record["state"] == "PRUNED",
                    )
            scheduler: Any = (
                FIFOScheduler()
                if t.pruner == "none"
                else ASHAScheduler(
                    time_attr="training_iteration",
                    metric="score",
                    mode="max",
                    max_t=evaluations + 1,
                    grace_period=1,
                    reduction_factor=2,
                )
            )
            tuner = Tuner(
                resources,
                tune_config=TuneConfig(
                    search_alg=searcher,
                    scheduler=scheduler,
                    num_samples=t.n_trials,
                    time_budget_s=t.timeout,
                    max_concurrent_trials=t.n_jobs if t.n_jobs > 1 else None,
                ),
                run_config=RunConfig(name=name, storage_path=str(out), verbose=1),
            )
        state.start(out, name)
        handler = signal.getsignal(signal.SIGINT)
        try:
            with _quiet_ray_resume():
                grid = tuner.fit()
            # Ray Tune's own SIGINT handler ends the run, saves its state and returns; it
            # puts the caller's handler back only when it was called
            interrupted = (
                threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is handler
                and not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
            )
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, handler)
        records = [_ray_record(grid[i], distributions) for i in range(len(grid))]
        if interrupted:  # its state is saved: the same command resumes it
            raise KeyboardInterrupt
    state.finish(out, records)
    with _quiet_optuna():
        study = optuna.create_study(study_name=study_name, direction="maximize")
    study.set_user_attr("objective", objective_name)
    for record in state.trials:  # every experiment's, each in the order Ray Tune made them
        params = {k: v for k, v in record["params"].items() if k in distributions}
        frozen = optuna.trial.create_trial(
            params=params,
            distributions={k: distributions[k] for k in params},
            value=record["value"],
            state=optuna.trial.TrialState[record["state"]],
            user_attrs={"ray_trial_id": record["ray_trial_id"], "scores": record["scores"]},
        )
        study.add_trial(frozen)
        if on_trial is not None:
            on_trial(study.trials[-1])
    if run_id is not None:
        _close_killed_runs(run_id)
    with _quiet_optuna():
        return finish(study, config, out, run_id, storage_url=f"ray:{out}")


class _DropMessages(logging.Filter):
    """Drops the records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


@contextlib.contextmanager
def _quiet_ray_resume() -> Iterator[None]:
    """Ray Tune's own lines that mislead a CLI user, for the call only: on Ctrl-C, the
    ``Tuner.restore(...)`` to resume with (the same command does: the caller says so); on a
    restore, the trials that had no result yet, and Optuna's warning that a rerun trial
    reports steps its first attempt had reported."""
    filters = [
        (logging.getLogger("ray.tune.tune"), _DropMessages("Experiment has been interrupted")),
        (
            logging.getLogger("ray.tune.analysis.experiment_analysis"),
            _DropMessages("Failed to fetch metrics"),
        ),
    ]
    for log, drop in filters:
        log.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The reported value is ignored", UserWarning)
            yield
    finally:
        for log, drop in filters:
            log.removeFilter(drop)


def _ray_record(result: Any, distributions: dict[str, Any]) -> dict[str, Any]:
    """A Ray Tune trial's result as JSON: its parameters, state, value and scores."""
    metrics, sampled = result.metrics or {}, result.config or {}
    final = bool(metrics.get("final")) and result.error is None
    return {
        "params": {k: sampled[k] for k in distributions if k in sampled},
        "state": "COMPLETE" if final else "FAIL" if result.error else "PRUNED",
        "value": float(metrics["score"]) if final else None,
        "ray_trial_id": metrics.get("trial_id"),
        "scores": metrics.get("scores"),
    }


@dataclass
class _RayState:
    """A Ray Tune study's own record, ``<study folder>/ray_study.json``: its MLflow run, its
    experiments (``ray``, ``ray-2``, ... in the study folder), whether the last one finished,
    and the trials of the finished ones (what a later experiment warm-starts from)."""

    run_id: str | None = None
    experiments: list[str] = field(default_factory=list)
    finished: bool = True
    trials: list[dict[str, Any]] = field(default_factory=list)

    FILE = "ray_study.json"

    @classmethod
    def load(cls, out: Path) -> _RayState:
        path = out / cls.FILE
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
            return cls(
                run_id=data.get("mlflow_run_id"),
                experiments=list(data["experiments"]),
                finished=bool(data["finished"]),
                trials=list(data["trials"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is not a Ray Tune study's record: {exc}") from None

    @property
    def unfinished(self) -> str | None:
        """The experiment to resume: the last one, when it did not finish."""
        return self.experiments[-1] if self.experiments and not self.finished else None

    def next_name(self, out: Path) -> str:
        n = len(self.experiments) + 1
        name = "ray" if n == 1 else f"ray-{n}"
        while (out / name).exists():  # a folder left by an earlier version: never reused
            n += 1
            name = f"ray-{n}"
        return name

    def start(self, out: Path, name: str) -> None:
        if name not in self.experiments:
            self.experiments.append(name)
        self.finished = False
        self._save(out)

    def finish(self, out: Path, records: list[dict[str, Any]]) -> None:
        self.trials.extend(records)
        self.finished = True
        self._save(out)

    def _save(self, out: Path) -> None:
        data = {
            "mlflow_run_id": self.run_id,
            "experiments": self.experiments,
            "finished": self.finished,
            "trials": self.trials,
        }
        tmp = out / (self.FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(out / self.FILE)


def _close_killed_runs(study_run_id: str, why: str = STOPPED_BY_ASHA) -> None:
    """Training runs under the study's run still marked running (their trial was stopped by
    ASHA, which ends the trial's actor): marked killed, tagged ``stopped`` as a pruned
    trial's training run is on the Optuna path (:func:`tracking.mlflow_run`)."""
    import mlflow

    client = mlflow.MlflowClient(tracking.tracking_uri())
    parent = client.get_run(study_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{study_run_id}' and "
        "attributes.status = 'RUNNING'",
    )
    for run in runs:
        client.set_tag(run.info.run_id, "stopped", why)
        client.set_terminated(run.info.run_id, "KILLED")
