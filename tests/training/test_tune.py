"""Hyperparameter tuning: search spaces and their narrowing, bad input, the test split never
touched, pruning, resuming a study, MLflow nesting, retraining with a deflated Sharpe,
PostgreSQL workers in several processes (one of them killed), and ``marketarena tune``
with Ctrl-C.

Studies live in a temporary folder (the default journal file there), with MLflow off or on
a SQLite file there. PostgreSQL studies (``MARKETARENA_TEST_POSTGRES_URL``, set up by
``.ci/postgres.sh``) get unique names and are deleted afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState
from rich.console import Console

from marketarena.cli import main
from marketarena.envs.data import resolve_data
from marketarena.envs.portfolio_env import PortfolioEnv
from marketarena.envs.vector_env import PortfolioVectorEnv
from marketarena.evaluation import metrics
from marketarena.training import search_spaces
from marketarena.training.config import Config, ConfigError, SearchParam, load_config
from marketarena.training.search_spaces import SPACES, Categorical, Float, Int
from marketarena.training.train import Trainer, split_ranges, train
from marketarena.training.tune import (
    Objective,
    StorageError,
    TuneResult,
    fold_splits,
    make_pruner,
    make_sampler,
    make_storage,
    tune,
)

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
# configs/smoke.yaml's splits, as the bundled calendar resolves them
TRAIN = ("2010-01-04", "2013-12-31")
VALIDATION = ("2014-01-02", "2015-12-31")
TEST_START = "2016-01-04"
# tiny trials (two rollouts of 4 x 32 steps, validated twice); the sampled parameters left
# are learning_rate, one_minus_gamma, activation, ent_coef, gae_lambda, clip_range, reward
FAST_SEARCH = (
    "tuning.search={n_steps_exp: 5, batch_size_exp: 5, n_epochs: 1, window: 8, net_arch: tiny}"
)
FAST = (
    "algo.total_timesteps=256",
    "training.eval_every=128",
    "training.checkpoint_every=1000000",
    "training.progress_bar=false",
    FAST_SEARCH,
)
NO_MLFLOW = ("mlflow.enabled=false",)
# what the ``marketarena`` console script runs
CLI = "from marketarena.cli import main; raise SystemExit(main())"
pytestmark = pytest.mark.usefixtures("reset_mlflow_uri")
POLL_DEADLINE_S = 180.0
POSTGRES_ENV = "MARKETARENA_TEST_POSTGRES_URL"


@pytest.fixture
def no_report(monkeypatch):
    """Skip each trial's validation report (plots, bootstrap intervals: seconds) where the
    test is about something else; the leakage test keeps it."""
    monkeypatch.setattr(Trainer, "validation_report", lambda self, model: self.run_dir)


def smoke(*overrides: str) -> Config:
    return load_config(SMOKE, overrides)


def run_cli(*args: str) -> tuple[int, str]:
    console = Console(record=True, width=400)
    code = main(list(args), console=console)
    return code, console.export_text()


def journal_study(folder: Path, name: str) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)]


# ----------------------------------------------------------------------- search spaces
def test_space_for_narrows_fixes_and_keeps_the_rest():
    search = {
        "learning_rate": SearchParam(low=1e-4, high=1e-3),  # log scale kept
        "ent_coef": SearchParam(low=0.0, high=0.01, log=False),  # log scale overridden
        "clip_range": SearchParam(low=0.1, high=0.3, log=True),  # categorical numbers: a range
        "n_steps_exp": SearchParam(low=6, high=8),  # still an integer
        "n_epochs": SearchParam(choices=(3, 7)),
        "window": 16,  # fixed
        "net_arch": "small",  # fixed
    }
    before = {k: dict(v) for k, v in SPACES.items()}
    space = search_spaces.space_for("ppo", search)
    assert space["learning_rate"] == Float(1e-4, 1e-3, log=True)
    assert space["ent_coef"] == Float(0.0, 0.01, log=False)
    assert space["clip_range"] == Float(0.1, 0.3, log=True)
    assert space["n_steps_exp"] == Int(6, 8, log=False)
    assert type(space["n_steps_exp"]) is Int and type(space["n_steps_exp"].low) is int
    assert space["n_epochs"] == Categorical((3, 7))
    assert space["window"] == 16 and space["net_arch"] == "small"
    assert set(space) == set(SPACES["ppo"])
    for name in set(SPACES["ppo"]) - set(search):
        assert space[name] == SPACES["ppo"][name], name
    assert {k: dict(v) for k, v in SPACES.items()} == before  # the shared spaces untouched
    # a range over integer choices stays integer
    window = search_spaces.space_for("ppo", {"window": SearchParam(low=8, high=24)})["window"]
    assert window == Int(8, 24) and type(window) is Int

    # the same through a YAML config, and sampled with a real trial
    config = smoke(
        "tuning.search={learning_rate: {low: 1.0e-4, high: 1.0e-3}, "
        "ent_coef: {low: 0.0, high: 0.01, log: false}, n_epochs: {choices: [3, 7]}, "
        "window: 16, net_arch: small}"
    )
    space = search_spaces.space_for("ppo", config.tuning.search)
    assert space["learning_rate"] == Float(1e-4, 1e-3, log=True)
    assert space["ent_coef"] == Float(0.0, 0.01, log=False)
    assert space["n_epochs"] == Categorical((3, 7))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(5):
        trial = study.ask()
        params = search_spaces.sample(trial, space)
        assert params["window"] == 16 and params["net_arch"] == "small"
        assert "window" not in trial.params and "net_arch" not in trial.params
        assert 1e-4 <= params["learning_rate"] <= 1e-3
        assert params["n_epochs"] in (3, 7)
        assert trial.distributions["learning_rate"].log
        assert not trial.distributions["ent_coef"].log
        assert isinstance(trial.distributions["n_steps_exp"], optuna.distributions.IntDistribution)
        assert set(trial.params) == set(space) - {"window", "net_arch"}


def test_unknown_parameters_are_named(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['bogus', 'gama'\] for ppo"):
        search_spaces.space_for("ppo", {"gama": 0.9, "bogus": SearchParam(low=1, high=2)})
    # PPO's parameters are not SAC's
    with pytest.raises(ValueError, match=r"\['n_epochs'\] for sac"):
        search_spaces.space_for("sac", {"n_epochs": 3})
    # a categorical parameter that is not a number cannot be given a range
    with pytest.raises(ValueError, match=r"tuning\.search\.reward: reward takes one of"):
        search_spaces.space_for("ppo", {"reward": SearchParam(low=0, high=1)})
    # through tune(): the error comes before a study is created
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="gama"):
        tune(smoke(*NO_MLFLOW, "tuning.search={gama: 0.9}"), out_dir=tmp_path / "tuning")
    assert not (tmp_path / "optuna.journal").exists()


def test_an_all_fixed_space_is_empty(tmp_path, monkeypatch):
    fixed = {name: 1 for name in SPACES["a2c"]}
    with pytest.raises(ValueError, match="search space for a2c is empty"):
        search_spaces.space_for("a2c", fixed)
    # one free parameter is enough
    assert search_spaces.space_for("a2c", {k: v for k, v in fixed.items() if k != "ent_coef"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    everything = ", ".join(f"{name}: 1" for name in SPACES["ppo"])
    code, text = run_cli("tune", "--config", str(SMOKE), "--set", f"tuning.search={{{everything}}}")
    assert code == 1
    assert "error:" in text and "search space for ppo is empty" in text
    assert not (tmp_path / "optuna.journal").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_to_overrides_by_hand():
    params = {
        "learning_rate": 3e-4,
        "one_minus_gamma": 0.0123456789,
        "n_steps_exp": 5,
        "batch_size_exp": 9,
        "n_epochs": 5,
        "ent_coef": 0.01,
        "gae_lambda": 0.95,
        "clip_range": 0.2,
        "net_arch": "medium",
        "activation": "relu",
        "window": 16,
        "reward": "differential_sharpe",
    }
    out = search_spaces.to_overrides("ppo", params, n_envs=2)
    assert out == {
        "algo": {
            "hyperparameters": {
                "learning_rate": 3e-4,
                "gamma": 0.987654,  # 1 - 0.0123456789, to 6 places
                "n_steps": 32,  # 2 ** 5
                "batch_size": 64,  # 2 ** 9 = 512, capped at n_steps * n_envs = 32 * 2
                "n_epochs": 5,
                "ent_coef": 0.01,
                "gae_lambda": 0.95,
                "clip_range": 0.2,
            },
            "net_arch": [256, 256],
            "activation": "relu",
        },
        "env": {"window": 16, "reward": "differential_sharpe"},
    }
    # a rollout large enough: no cap
    big = search_spaces.to_overrides("ppo", params, n_envs=32)
    assert big["algo"]["hyperparameters"]["batch_size"] == 512
    # A2C: n_steps from 2 ** k, no batch size; net_arch names
    a2c = search_spaces.to_overrides(
        "a2c", {"n_steps_exp": 3, "one_minus_gamma": 0.1, "net_arch": "tiny"}, n_envs=8
    )
    assert a2c == {
        "algo": {"hyperparameters": {"gamma": 0.9, "n_steps": 8}, "net_arch": [32]},
        "env": {},
    }
    # off-policy: the batch size is not capped by a rollout; a fixed list passes through
    sac = search_spaces.to_overrides(
        "sac",
        {
            "batch_size_exp": 9,
            "tau": 0.01,
            "train_freq": 4,
            "learning_starts": 100,
            "net_arch": [8, 8],
            "reward": "log_return",
        },
        n_envs=1,
    )
    assert sac == {
        "algo": {
            "hyperparameters": {
                "batch_size": 512,
                "tau": 0.01,
                "train_freq": 4,
                "learning_starts": 100,
            },
            "net_arch": [8, 8],
        },
        "env": {"reward": "log_return"},
    }
    # the overrides make a valid config
    from marketarena.training.config import build_config, merge

    config = build_config(merge(smoke().to_dict(), out))
    assert config.algo.hyperparameters["gamma"] == 0.987654
    assert config.algo.net_arch == (256, 256) and config.env.window == 16


# ------------------------------------------------------------------------- bad input
def test_unknown_sampler_and_pruner(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="unknown sampler 'cmaes'; choose tpe or random"):
        make_sampler("cmaes", 0)
    with pytest.raises(ConfigError, match="unknown pruner 'hyperband'; choose median, halving"):
        make_pruner("hyperband")
    with pytest.raises(ConfigError, match=r"tuning\.sampler"):
        smoke("tuning.sampler=cmaes")
    with pytest.raises(ConfigError, match=r"tuning\.pruner"):
        smoke("tuning.pruner=hyperband")
    monkeypatch.chdir(tmp_path)
    for flag, value in (("--sampler", "cmaes"), ("--pruner", "hyperband")):
        with pytest.raises(SystemExit) as exit_info:
            main(["tune", "--config", str(SMOKE), flag, value])
        assert exit_info.value.code == 2
        assert f"invalid choice: '{value}'" in capsys.readouterr().err
    code, text = run_cli("tune", "--config", str(SMOKE), "--set", "tuning.pruner=hyperband")
    assert code == 1 and "error:" in text and "tuning.pruner" in text
    assert not (tmp_path / "optuna.journal").exists()


def draw(trial: optuna.trial.Trial) -> tuple[float, int, str]:
    return (
        trial.suggest_float("lr", 1e-5, 1e-2, log=True),
        trial.suggest_int("n", 0, 1000),
        trial.suggest_categorical("net", ["tiny", "small", "medium"]),
    )


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_samplers_are_reproducible_and_workers_never_share_a_stream(sampler):
    def join(storage: optuna.storages.BaseStorage, seed: int = 0) -> optuna.Study:
        """A worker with the same config (and sampler seed) joining study "s"."""
        return optuna.create_study(
            storage=storage,
            study_name="s",
            load_if_exists=True,
            sampler=make_sampler(sampler, seed),
            direction="maximize",
        )

    def lone_run(seed: int) -> list[tuple]:
        study = join(optuna.storages.InMemoryStorage(), seed)
        study.optimize(lambda t: draw(t)[1], n_trials=4)
        return [tuple(t.params.values()) for t in study.trials]

    assert lone_run(0) == lone_run(0) != lone_run(1)  # one worker: reproducible from the seed
    # two workers join an empty study at the same moment: their first trials differ
    shared = optuna.storages.InMemoryStorage()
    first, second = join(shared).ask(), join(shared).ask()
    assert (first.number, second.number) == (0, 1)
    drawn = [draw(first), draw(second)]
    assert drawn[0] != drawn[1]
    # a worker joining later (or a resumed study) replays neither
    third = join(shared).ask()
    assert third.number == 2 and draw(third) not in drawn


def test_unreachable_postgres_is_a_storage_error_without_the_password(tmp_path, monkeypatch):
    url = "postgresql://u:secretpw@127.0.0.1:1/db"
    with pytest.raises(StorageError) as info:
        make_storage(url)
    message = str(info.value)
    assert "cannot open the Optuna storage postgresql://u:***@127.0.0.1:1/db" in message
    assert "secretpw" not in message and "secretpw" not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    # through tune() and the command: a clear error, no traceback, no password
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError, match=r"u:\*\*\*@"):
        tune(smoke(*NO_MLFLOW, f"tuning.storage={url}"), out_dir=tmp_path / "tuning")
    code, text = run_cli(
        "tune", "--config", str(SMOKE), "--storage", url, "--set", "mlflow.enabled=false"
    )
    assert code == 1, text
    assert "error:" in text and "cannot open the Optuna storage" in text
    assert "secretpw" not in text


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://u:secretpw@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql://u@h/db?password=secretpw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://h/db?user=u&PASSWORD=secretpw", "postgresql://h/db?user=u&PASSWORD=***"),
        (
            "postgresql://u:secretpw@h/db?sslpassword=secretpw",
            "postgresql://u:***@h/db?sslpassword=***",
        ),
        ("host=h user=u password=secretpw dbname=d", "host=h user=u password=*** dbname=d"),
        ("password='secret pw' host=h", "password=*** host=h"),
        ("sqlite:///optuna.db", "sqlite:///optuna.db"),
        ("optuna.journal", "optuna.journal"),
    ],
)
def test_every_libpq_credential_form_is_redacted(url, redacted):
    from marketarena.training.tune import _redact

    assert _redact(url) == redacted


def test_a_query_password_never_reaches_the_error(tmp_path):
    url = "postgresql://u@127.0.0.1:1/db?password=secretpw"
    with pytest.raises(StorageError) as info:
        make_storage(url)
    assert "password=***" in str(info.value)
    assert "secretpw" not in str(info.value) and "secretpw" not in repr(info.value)


# --------------------------------------------------------------------------- leakage
@pytest.fixture
def built_ranges(monkeypatch) -> list[tuple[str, str | None, str | None]]:
    """Every (kind, start, end) that a PortfolioEnv or PortfolioVectorEnv is built with."""
    built: list[tuple[str, str | None, str | None]] = []

    def recording(cls):
        original = cls.__init__

        def init(self, *args, **kwargs):
            built.append((cls.__name__, kwargs.get("start"), kwargs.get("end")))
            original(self, *args, **kwargs)

        return init

    for cls in (PortfolioEnv, PortfolioVectorEnv):
        monkeypatch.setattr(cls, "__init__", recording(cls))
    return built


def smoke_dates() -> np.ndarray:
    config = smoke()
    return resolve_data(config.env.data).select(config.env.universe).dates


@pytest.mark.parametrize("folds", [1, 2])
def test_tuning_never_builds_the_test_split(folds, tmp_path, monkeypatch, built_ranges):
    monkeypatch.chdir(tmp_path)
    config = smoke(
        *FAST,
        *NO_MLFLOW,
        "tuning.n_trials=1",
        f"tuning.folds={folds}",
        "tuning.fold_validation_days=60",
    )
    result = tune(config, out_dir=tmp_path / "tuning")
    assert result.n_complete == 1
    # not a vacuous pass: the training envs and validation backtests were seen
    if folds == 1:
        expected = [("PortfolioVectorEnv", *TRAIN), ("PortfolioEnv", *VALIDATION)]
    else:
        dates = [str(d) for d in smoke_dates()]
        t = dates.index(TEST_START)
        expected = []
        for k in (2, 1):  # validation ranges of 60 days, the last one just before the test
            v = t - k * 60
            expected += [
                ("PortfolioVectorEnv", TRAIN[0], dates[v - 1]),
                ("PortfolioEnv", dates[v], dates[v + 59]),
            ]
        assert expected[-1][2] == VALIDATION[1]
    for item in expected:
        assert item in built_ranges, (item, sorted(set(built_ranges)))
    for kind, start, end in built_ranges:
        assert start is not None and end is not None, (kind, start, end)  # None = to the end
        assert start <= end < TEST_START, (kind, start, end)


def test_fold_splits_by_hand():
    dates = [str(d) for d in smoke_dates()]
    t, first = dates.index(TEST_START), dates.index(TRAIN[0])
    assert fold_splits(smoke()) == [smoke().env.splits.model_dump()]
    config = smoke("tuning.folds=3", "tuning.fold_validation_days=100")
    folds = fold_splits(config)
    assert folds == [
        {
            "start": TRAIN[0],
            "validation_start": dates[t - k * 100],
            "test_start": dates[t - (k - 1) * 100],
            "end": dates[t - (k - 1) * 100],
        }
        for k in (3, 2, 1)
    ]
    data = resolve_data(config.env.data).select(config.env.universe)
    validations = []
    for fold in folds:
        fold_config = load_config(SMOKE, (), extra={"env": {"splits": fold}})
        ranges = split_ranges(fold_config, data)
        assert ranges["train"][0] == TRAIN[0]
        assert ranges["train"][1] < ranges["validation"][0]  # trains on the past only
        assert ranges["validation"][1] < TEST_START
        assert ranges["test"] == (fold["test_start"],) * 2  # one day, never built
        validations.append(ranges["validation"])
    # the validation ranges tile the last 300 days of train + validation: each 100 days,
    # each starting the day after the one before ends, the last ending the day before test
    for (_, a_end), (b_start, _) in itertools.pairwise(validations):
        assert dates.index(b_start) == dates.index(a_end) + 1
    for start, end in validations:
        assert dates.index(end) - dates.index(start) + 1 == 100
    assert validations[0][0] == dates[t - 300] and validations[-1][1] == dates[t - 1]
    assert dates.index(validations[0][0]) - first >= 200  # room to train before fold 1
    with pytest.raises(ConfigError, match="too little training data before the first fold"):
        fold_splits(smoke("tuning.folds=5", "tuning.fold_validation_days=252"))


# --------------------------------------------------------------------------- pruning
def test_a_nan_validation_score_prunes_the_trial(tmp_path, monkeypatch, no_report):
    """Trial 1's validation Sharpe is NaN at every evaluation: pruned, not failed, and the
    study goes on. (No pruner: only the NaN can prune it.) In MLflow its training run ends
    KILLED with why (stopped on purpose: the FAILED runs are the ones that broke), the
    others FINISHED."""
    from mlflow.tracking import MlflowClient

    original = Trainer.validation_backtest
    nan_trials: list[str] = []

    def validation_backtest(self, agent, progress=None):
        result = original(self, agent, progress)
        if self.config.name.endswith("-t1"):
            table = result.metrics()
            result.metrics = lambda: {**table, "sharpe": float("nan")}
            nan_trials.append(self.config.name)
        return result

    monkeypatch.setattr(Trainer, "validation_backtest", validation_backtest)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    seen = []
    result = tune(
        smoke(*FAST, "tuning.n_trials=3", "tuning.pruner=none"),
        out_dir=tmp_path / "tuning",
        on_trial=seen.append,
    )
    assert nan_trials == ["smoke-t1"]  # pruned at its first validation
    study = journal_study(tmp_path, "smoke")
    assert states(study) == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert (result.n_complete, result.n_pruned, result.n_failed) == (2, 1, 0)
    assert study.trials[1].value is None
    assert [t.state for t in seen] == states(study)
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    # a training run's name: <trial's config name>__<algo>__<seed>__<time>
    trained = {
        r.info.run_name.split("__")[0]: r for r in runs if r.data.tags.get("kind") == "training"
    }
    assert {n: r.info.status for n, r in trained.items()} == {
        "smoke-t0": "FINISHED",
        "smoke-t1": "KILLED",
        "smoke-t2": "FINISHED",
    }
    assert trained["smoke-t1"].data.tags["stopped"] == "pruned: NaN validation score"
    assert "stopped" not in trained["smoke-t0"].data.tags


def test_a_diverging_run_is_pruned_and_another_error_is_not(tmp_path, monkeypatch):
    import marketarena.training.tune as tune_module

    calls = []

    def fake_train(config, **kwargs):
        calls.append(config.name)
        if config.name.endswith("-t0"):
            raise ValueError(
                "Expected parameter loc of Normal to satisfy: found invalid "
                "values: tensor([[nan, nan]])"
            )
        raise RuntimeError("boom: could not infer the dtype, information lost")  # not NaN/inf

    monkeypatch.setattr(tune_module, "train", fake_train)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        tune(smoke(*FAST, *NO_MLFLOW, "tuning.n_trials=3"), out_dir=tmp_path / "tuning")
    assert calls == ["smoke-t0", "smoke-t1"]
    assert states(journal_study(tmp_path, "smoke")) == [TrialState.PRUNED, TrialState.FAIL]


def test_the_median_pruner_prunes_a_clearly_worse_trial():
    """``Objective._reporter`` (what ``train`` calls after each validation) against a real
    in-memory study with the configured median pruner."""
    study = optuna.create_study(
        direction="maximize", pruner=make_pruner("median"), sampler=make_sampler("random", 0)
    )

    def run(scores: list[float]) -> tuple[str, int | None]:
        trial = study.ask()
        report = Objective._reporter(trial)
        try:
            for step, score in zip((128, 256, 384), scores, strict=True):
                assert report(step, score) is True
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            return "pruned", study.trials[-1].last_step
        study.tell(trial, scores[-1])
        return "complete", study.trials[-1].last_step

    # the startup trials run to the end, even a bad one
    assert run([1.0, 1.1, 1.2]) == ("complete", 384)
    assert run([0.8, 0.9, 1.0]) == ("complete", 384)
    assert run([-5.0, -5.0, -5.0]) == ("complete", 384)
    # then: a clearly worse trial stops at its first report; a good one does not
    assert run([-3.0, -3.0, -3.0]) == ("pruned", 128)
    assert run([2.0, 2.0, 2.0]) == ("complete", 384)
    # a trial whose best so far falls below the median stops there (step 128: 0.95 is above
    # the median 0.9 of the complete trials; step 256: below their median 1.0)
    assert run([0.95, 0.5, 2.0]) == ("pruned", 256)
    # a NaN score prunes without being reported
    assert run([1.5, float("nan"), 2.0]) == ("pruned", 128)


# ---------------------------------------------- resuming, the command, MLflow, best config
@dataclass
class ResumedStudy:
    root: Path
    uri: str
    first_text: str
    first_code: int
    second: TuneResult
    study: optuna.Study


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> ResumedStudy:
    """``marketarena tune`` (in-process) runs 2 trials of study "resume" into the default
    journal file, then ``tune`` runs 2 more on the same study; MLflow on SQLite."""
    root = tmp_path_factory.mktemp("resume")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    overrides = [*FAST, f"training.output_dir={root / 'runs'}"]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setattr(Trainer, "validation_report", lambda self, model: self.run_dir)
        args = [a for o in overrides for a in ("--set", o)]
        code, text = run_cli(
            "tune", "--config", str(SMOKE), "--study", "resume", "--n-trials", "2", *args
        )
        config = smoke(*overrides, "tuning.study=resume", "tuning.n_trials=2")
        second = tune(config, out_dir=root / "tuning")
    return ResumedStudy(root, uri, text, code, second, journal_study(root, "resume"))


def test_tune_command_prints_trials_summary_and_best_config(resumed):
    assert resumed.first_code == 0, resumed.first_text
    text = resumed.first_text
    trials = sorted(resumed.study.trials, key=lambda t: t.number)[:2]
    for trial in trials:
        assert f"trial {trial.number}: complete {trial.value:.4f}" in text
    assert "study resume in optuna.journal: 2 trials (2 complete, 0 pruned, 0 failed)" in text
    best = max(trials, key=lambda t: t.value)
    assert f"best sharpe: {best.value:.4f} with {{" in text
    path = resumed.root / "tuning" / "resume" / "best_config.yaml"
    assert f"best config: {path}" in text


def test_the_study_resumes_from_the_journal(resumed):
    study = resumed.study
    assert (resumed.root / "optuna.journal").is_file()
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert states(study) == [TrialState.COMPLETE] * 4
    assert (resumed.second.n_trials, resumed.second.n_complete) == (4, 4)
    assert resumed.second.best_value == study.best_value
    # the resumed run drew new parameters rather than replaying the first two trials
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 4
    # load_if_exists: creating it again is an error, loading it is not
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(resumed.root / "optuna.journal"))
    )
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):
        optuna.create_study(study_name="resume", storage=storage, load_if_exists=False)
    again = optuna.create_study(
        study_name="resume", storage=storage, load_if_exists=True, direction="maximize"
    )
    assert len(again.trials) == 4 and again.best_value == study.best_value


def test_trials_record_readable_values_and_train_with_them(resumed):
    for trial in resumed.study.trials:
        attrs, params = trial.user_attrs, trial.params
        assert attrs["algo.hyperparameters.gamma"] == round(1 - params["one_minus_gamma"], 6)
        assert attrs["algo.hyperparameters.learning_rate"] == params["learning_rate"]
        assert attrs["algo.hyperparameters.n_steps"] == 32  # fixed n_steps_exp 5
        assert attrs["algo.hyperparameters.batch_size"] == 32
        assert attrs["algo.net_arch"] == [32]  # fixed "tiny"
        assert attrs["algo.activation"] == params["activation"]
        assert attrs["env.window"] == 8
        assert attrs["env.reward"] == params["reward"]
        assert len(attrs["scores"]) == 1 and attrs["scores"][0] == pytest.approx(trial.value)
        # the trial's own run folder trained with exactly these values
        (run_dir,) = (resumed.root / "tuning" / "resume" / "trials").glob(
            f"smoke-t{trial.number}__ppo__0__*"
        )
        config = load_config(run_dir / "config.yaml")
        assert config.algo.hyperparameters["gamma"] == attrs["algo.hyperparameters.gamma"]
        assert config.algo.hyperparameters["n_steps"] == 32
        assert config.algo.net_arch == (32,)
        assert config.env.reward == params["reward"]
        assert config.training.selection_metric == "sharpe"


def test_mlflow_study_run_nests_the_trials(resumed):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=resumed.uri)
    experiment = client.get_experiment_by_name("marketarena-training")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    studies = [r for r in runs if r.data.tags.get("kind") == "tuning"]
    assert len(studies) == 1  # the second tune call found the first one's run
    study_run = studies[0]
    assert study_run.data.tags["study"] == "resume"
    assert resumed.study.user_attrs["mlflow_parent_run_id"] == study_run.info.run_id
    assert resumed.second.study_run_id == study_run.info.run_id
    trial_runs = [r for r in runs if r.data.tags.get("kind") == "training"]
    assert len(trial_runs) == 4
    for run in trial_runs:
        assert run.data.tags["mlflow.parentRunId"] == study_run.info.run_id
    assert sorted(r.data.params["name"] for r in trial_runs) == [f"smoke-t{n}" for n in range(4)]
    logged = study_run.data.metrics
    assert logged["best/sharpe"] == pytest.approx(resumed.study.best_value)
    assert logged["trials/complete"] == 4
    importances = {k for k in logged if k.startswith("importance/")}
    assert importances, sorted(logged)
    assert importances <= {f"importance/{p}" for p in resumed.study.best_params}
    assert sum(logged[k] for k in importances) == pytest.approx(1.0, abs=1e-6)
    artifacts = {a.path for a in client.list_artifacts(study_run.info.run_id)}
    plots = {"optimization_history.png", "param_importances.png", "parallel_coordinate.png"}
    assert {"best_config.yaml", *plots} <= artifacts
    assert study_run.data.params["base.tuning.study"] == "resume"


def test_best_config_loads_and_trains(resumed, tmp_path, monkeypatch, no_report):
    path = resumed.root / "tuning" / "resume" / "best_config.yaml"
    config = load_config(path)
    best = resumed.study.best_trial
    assert config.name == "smoke-best"
    assert config.algo.hyperparameters["gamma"] == best.user_attrs["algo.hyperparameters.gamma"]
    assert config.algo.hyperparameters["learning_rate"] == best.params["learning_rate"]
    assert config.env.reward == best.params["reward"]
    assert config.env.splits == smoke().env.splits  # the config's own splits, not a fold's
    # what tuning.search fixed (so not in the trial's params) is what the trial trained with
    hp = config.algo.hyperparameters
    assert (hp["n_steps"], hp["batch_size"], hp["n_epochs"]) == (32, 32, 1)
    assert config.algo.net_arch == (32,) and config.env.window == 8
    assert f"trial {best.number}" in path.read_text().splitlines()[0]
    monkeypatch.chdir(tmp_path)
    result = train(
        load_config(
            path,
            [
                "algo.total_timesteps=128",
                "training.eval_every=128",
                "mlflow.enabled=false",
                "training.progress_bar=false",
                f"training.output_dir={tmp_path / 'runs'}",
            ],
        )
    )
    assert result.timesteps == 128 and result.model_path.is_file()
    assert math.isfinite(result.best_validation["sharpe"])


# --------------------------------------------------------------------------- retrain
def test_retrain_reports_a_deflated_sharpe_on_the_test_split(tmp_path, monkeypatch, no_report):
    monkeypatch.chdir(tmp_path)
    config = smoke(
        *FAST,
        *NO_MLFLOW,
        "tuning.n_trials=2",
        "tuning.retrain=true",
        f"training.output_dir={tmp_path / 'runs'}",
    )
    result = tune(config, out_dir=tmp_path / "tuning")
    test = result.test
    assert test["n_trials"] == 2.0
    report = tmp_path / "tuning" / "smoke" / "test_report"
    assert (report / "report.html").is_file()
    (daily,) = report.glob("daily_ppo_*.csv")
    frame = pd.read_csv(daily)
    assert frame["date"].iloc[0] == TEST_START  # evaluated on the test split
    returns = frame["return"].dropna().to_numpy()
    assert len(returns) > 250
    assert test["sharpe"] == pytest.approx(metrics.sharpe_ratio(returns))
    psr = float(metrics.probabilistic_sharpe_ratio(returns))
    dsr = test["deflated_sharpe"]
    assert 0.0 <= dsr <= 1.0
    values = [t.value for t in journal_study(tmp_path, "smoke").trials]
    variance = float(np.var(values, ddof=1))
    assert variance > 0  # two different trials: the deflation is real
    assert dsr < psr
    expected = metrics.deflated_sharpe_ratio(returns, n_trials=2, trials_sharpe_variance=variance)
    assert dsr == pytest.approx(float(expected))


# ----------------------------------------------------------------- PostgreSQL workers
@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"CI must set {POSTGRES_ENV} (see .ci/postgres.sh)")
        pytest.skip(f"{POSTGRES_ENV} is not set: run `export {POSTGRES_ENV}=$(.ci/postgres.sh)`")
    return url


@contextlib.contextmanager
def postgres_study(url: str) -> Iterator[tuple[str, optuna.storages.BaseStorage]]:
    """A unique study name and the storage (as ``tune`` opens it); the study is deleted
    afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    storage = make_storage(url)
    try:
        yield name, storage
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=storage)
        storage.remove_session()
        storage.engine.dispose()


def start_worker(folder: Path, log: str, *args: str) -> subprocess.Popen:
    """``marketarena tune`` on the smoke config in its own process, output to ``log``."""
    # PYTHONFAULTHANDLER: a worker stuck past a deadline can be made to print its stacks
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",
    }
    with open(folder / log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", CLI, "tune", "--config", str(SMOKE), *args],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_interruptible,
        )


def _interruptible() -> None:
    """In the worker, before Python starts: Ctrl-C (SIGINT) acts as in a terminal. A test
    run started in the background (``pytest &``, some CI runners) has SIGINT ignored, and a
    child inherits that: Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sets(*overrides: str) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def wait_for(predicate, what: str, deadline_s: float = POLL_DEADLINE_S, every: float = 0.25):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_postgres_workers_share_one_study(postgres_url, tmp_path):
    with postgres_study(postgres_url) as (name, storage):
        args = ["--storage", postgres_url, "--study", name, "--n-trials", "2"]
        workers = [
            start_worker(
                tmp_path, f"w{i}.log", *args, "--output", f"tuning{i}", *sets(*FAST, *NO_MLFLOW)
            )
            for i in range(2)
        ]
        try:
            codes = [w.wait(timeout=300) for w in workers]
        finally:
            stop(*workers)
        logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
        assert codes == [0, 0], logs
        study = optuna.load_study(study_name=name, storage=storage)
        numbers = sorted(t.number for t in study.trials)
        assert numbers == [0, 1, 2, 3]  # 2 + 2, each recorded once
        assert set(states(study)) <= {TrialState.COMPLETE, TrialState.PRUNED}
        # each worker ran two of them, and no trial was run by both
        printed = [
            {
                int(line.split()[1].rstrip(":"))
                for line in log.splitlines()
                if line.startswith("trial ")
            }
            for log in logs
        ]
        assert [len(p) for p in printed] == [2, 2] and printed[0] | printed[1] == set(numbers)
        # each worker's summary names the storage without its password
        parts = urlsplit(postgres_url)
        redacted = postgres_url.replace(f":{parts.password}@", ":***@")
        for log in logs:
            assert f"study {name} in {redacted}: " in log, log
            assert not parts.password or parts.password not in log


@pytest.mark.slow
def test_postgres_killed_worker_fails_its_trial_and_the_study_goes_on(
    postgres_url, tmp_path, monkeypatch, no_report
):
    """Worker A runs one long trial and is SIGKILLed in the middle of it; worker B (started
    just before the kill, heartbeat 1 s, grace 3 s) marks A's trial failed when it starts
    its own trials, finishes them, and a third worker still adds a trial."""
    heartbeat = ("tuning.heartbeat_interval=1", "tuning.grace_period=3")
    with postgres_study(postgres_url) as (name, storage):
        a = start_worker(
            tmp_path,
            "a.log",
            "--storage",
            postgres_url,
            "--study",
            name,
            "--n-trials",
            "1",
            "--pruner",
            "none",
            "--output",
            "tuning_a",
            *sets(
                *FAST,
                *NO_MLFLOW,
                *heartbeat,
                "algo.total_timesteps=1000000",
                "tuning.search={n_steps_exp: 5, batch_size_exp: 5, n_epochs: 1, "
                "window: 16, net_arch: tiny}",
            ),
        )
        b = None
        try:

            def a_running():
                try:
                    study = optuna.load_study(study_name=name, storage=storage)
                except KeyError:  # not created yet
                    return None
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                return running[0] if running and "env.window" in running[0].user_attrs else None

            a_trial = wait_for(a_running, "worker A's trial to run")
            assert a_trial.user_attrs["env.window"] == 16  # A's (B's trials use window 8)
            time.sleep(1.5)  # its heartbeat is recorded
            b = start_worker(
                tmp_path,
                "b.log",
                "--storage",
                postgres_url,
                "--study",
                name,
                "--n-trials",
                "2",
                "--output",
                "tuning_b",
                *sets(*FAST, *NO_MLFLOW, *heartbeat),
            )
            assert a.poll() is None, (tmp_path / "a.log").read_text()  # still training
            a.send_signal(signal.SIGKILL)
            assert a.wait(timeout=30) == -signal.SIGKILL
            assert b.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()
        finally:
            stop(a, *([b] if b else []))
        study = optuna.load_study(study_name=name, storage=storage)
        trials = {t.number: t for t in study.trials}
        assert len(trials) == 3
        assert trials[a_trial.number].state == TrialState.FAIL  # marked by worker B
        b_trials = [t for n, t in trials.items() if n != a_trial.number]
        assert all(t.user_attrs["env.window"] == 8 for t in b_trials)
        assert {t.state for t in b_trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
        assert "1 failed" in (tmp_path / "b.log").read_text()

        # the study stays usable: one more trial, in this process, with MLflow on
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        config = smoke(
            *FAST,
            f"tuning.storage={postgres_url}",
            f"tuning.study={name}",
            "tuning.n_trials=1",
            f"training.output_dir={tmp_path / 'runs'}",
        )
        result = tune(config, out_dir=tmp_path / "tuning_c")
        assert (result.n_trials, result.n_failed) == (4, 1)
        study = optuna.load_study(study_name=name, storage=storage)
        assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
        assert study.trials[3].state == TrialState.COMPLETE
        # the storage password is logged nowhere: not in MLflow, not in best_config.yaml
        password = urlsplit(postgres_url).password
        assert password and password not in result.storage
        assert password not in result.best_config_path.read_text()
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()], max_results=100
        )
        assert {r.data.tags.get("kind") for r in runs} == {"tuning", "training"}
        for run in runs:
            for key, value in run.data.params.items():
                assert password not in value, key
        assert yaml.safe_load(result.best_config_path.read_text())["tuning"]["storage"] == (
            result.storage
        )


# ---------------------------------------------------------------------- Ctrl-C, resume
@pytest.mark.slow
def test_ctrl_c_exits_130_and_a_rerun_resumes(tmp_path, monkeypatch, no_report):
    worker = start_worker(
        tmp_path,
        "tune.log",
        "--n-trials",
        "5",
        "--pruner",
        "none",
        *sets(*FAST, *NO_MLFLOW, "algo.total_timesteps=1000000"),
    )
    try:

        def training():
            if not (tmp_path / "optuna.journal").exists():
                return None
            try:
                study = journal_study(tmp_path, "smoke")
            except KeyError:
                return None
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            return running and running[0].intermediate_values  # validated once, training on

        wait_for(training, "the first trial to report a validation score")
        worker.send_signal(signal.SIGINT)
        try:
            code = worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack
            worker.wait(timeout=30)
            pytest.fail(
                "the worker did not stop within 60 s of Ctrl-C; its output and stacks:\n"
                + (tmp_path / "tune.log").read_text()
            )
    finally:
        stop(worker)
    log = (tmp_path / "tune.log").read_text()
    assert code == 130, log
    assert "interrupted: the study is saved; run the same command again to resume" in log
    assert log.rstrip().endswith("run the same command again to resume")
    # the interrupted trial is one line, not Optuna's traceback of the KeyboardInterrupt
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert re.search(r"Trial 0 failed with parameters: \{.*\}: interrupted \(Ctrl-C\)", log), log
    assert states(journal_study(tmp_path, "smoke")) == [TrialState.FAIL]
    # the same command again (a shorter budget): the study resumes
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(
        "tune",
        "--config",
        str(SMOKE),
        "--n-trials",
        "1",
        "--pruner",
        "none",
        *sets(*FAST, *NO_MLFLOW),
    )
    assert code == 0, text
    assert "study smoke in optuna.journal: 2 trials (1 complete, 0 pruned, 1 failed)" in text
    assert "trial 1: complete" in text
    assert states(journal_study(tmp_path, "smoke")) == [TrialState.FAIL, TrialState.COMPLETE]
