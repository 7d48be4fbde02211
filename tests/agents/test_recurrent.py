"""A recurrent PPO model (sb3-contrib) as an agent: detected from its zip, its LSTM state
carried from one act to the next, cleared by reset, and saved with the agent so that a
resumed persisted backtest is bit-identical to an uninterrupted one."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO

from marketarena.agents.registry import make_agent
from marketarena.agents.sb3_agent import SB3Agent, detect_algorithm, write_agent_metadata
from marketarena.envs import PortfolioVectorEnv
from marketarena.envs.core import ActionSpec
from marketarena.envs.data import resolve_data
from marketarena.envs.portfolio_env import PortfolioEnv
from marketarena.envs.sb3_vec_env import SB3PortfolioVecEnv
from marketarena.evaluation.runner import run_backtest
from marketarena.evaluation.saved_runs.persisted import load_result, resume_backtest, start_backtest
from marketarena.evaluation.saved_runs.store import RunStore

UNIVERSE = ("AAPL", "JNJ", "JPM", "XOM", "KO")
WINDOW, FEATURES = 8, ("log_return",)
TRAIN = ("2010-01-04", "2013-12-31")
EVAL = ("2014-01-02", "2014-06-30")  # 123 decisions


def training_env(n_envs: int = 4) -> SB3PortfolioVecEnv:
    data = resolve_data("sp500_20").select(UNIVERSE)
    venv = PortfolioVectorEnv(
        n_envs,
        data,
        start=TRAIN[0],
        end=TRAIN[1],
        window=WINDOW,
        features=FEATURES,
        action_mapping="softmax",
        episode_length=64,
    )
    return SB3PortfolioVecEnv(venv)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny networks gain nothing from more threads, and lose much on a busy CPU (an LSTM
    step with two threads there was measured 15x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A model folder as ``marketarena train`` writes it (model.zip and agent.json), of a
    recurrent PPO trained a little, away from its initial near-constant actions."""
    model = RecurrentPPO(
        "MlpLstmPolicy",
        training_env(),
        n_steps=32,
        batch_size=64,
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs={"lstm_hidden_size": 16, "net_arch": [16]},
    )
    model.learn(256)
    folder = tmp_path_factory.mktemp("recurrent") / "model"
    folder.mkdir()
    model.save(folder / "model.zip")
    spec = ActionSpec("softmax", 5.0)
    write_agent_metadata(
        folder,
        algorithm="recurrent_ppo",
        name="tiny",
        window=WINDOW,
        features=list(FEATURES),
        symbols=list(UNIVERSE),
        action_spec=spec.__dict__,
    )
    return folder


def eval_env() -> PortfolioEnv:
    data = resolve_data("sp500_20").select(UNIVERSE)
    return PortfolioEnv(
        data,
        start=EVAL[0],
        end=EVAL[1],
        window=WINDOW,
        features=FEATURES,
        episode_length=None,
        random_start=False,
    )


# ----------------------------------------------------------------------- loading
def test_a_recurrent_zip_is_detected_as_recurrent_ppo(model_dir, tmp_path):
    bare = tmp_path / "bare.zip"  # no agent.json next to it: the zip alone must tell
    shutil.copyfile(model_dir / "model.zip", bare)
    assert detect_algorithm(bare) == "recurrent_ppo"
    agent = SB3Agent.from_file(bare)
    assert agent.name == "recurrent_ppo:bare" and agent.recurrent
    assert isinstance(agent.model, RecurrentPPO)
    # the same hyperparameters saved by PPO are still PPO's
    PPO("MlpPolicy", training_env(), n_steps=16, batch_size=32, device="cpu").save(
        tmp_path / "ppo.zip"
    )
    assert detect_algorithm(tmp_path / "ppo.zip") == "ppo"
    assert not SB3Agent.from_file(tmp_path / "ppo.zip").recurrent
    # the agent specs of the command line
    assert make_agent(str(model_dir)).name == "recurrent_ppo:tiny"
    assert make_agent(f"recurrent_ppo:{bare}").recurrent


# ------------------------------------------------------------------- LSTM state
def test_the_lstm_state_is_carried_from_one_act_to_the_next(model_dir):
    agent = SB3Agent.from_file(model_dir)
    env = eval_env()
    observation, info = env.reset(seed=0)
    agent.reset(seed=0)
    assert agent.lstm_state is None
    observations, states, actions = [], [], []
    for _ in range(20):
        observations.append(observation)
        actions.append(agent.act(observation, info))
        states.append(agent.lstm_state)
        observation, *_, info = env.step(actions[-1])
    hidden, cell = states[0]
    assert hidden.shape == cell.shape == (1, 1, 16)  # (layers, envs, hidden size)
    for before, after in itertools.pairwise(states):
        assert not np.array_equal(before[0], after[0]), "the state did not move"
    # the model's own recurrence, state threaded by hand, gives the same raw actions
    model, state = agent.model, None
    for k, obs in enumerate(observations):
        raw, state = model.predict(
            obs, state=state, episode_start=np.array([k == 0]), deterministic=True
        )
        np.testing.assert_array_equal(state[0], states[k][0])
        np.testing.assert_array_equal(
            agent.action_spec.to_weights(raw[None, :])[0], actions[k][:-1]
        )
    # ... and dropping the state would act differently: the memory matters
    forgetful = [model.predict(obs, deterministic=True)[0] for obs in observations]
    weights = [agent.action_spec.to_weights(a[None, :])[0] for a in forgetful]
    np.testing.assert_array_equal(weights[0], actions[0][:-1])
    assert any(not np.array_equal(w, a[:-1]) for w, a in zip(weights, actions, strict=True))


def test_reset_clears_the_state_so_episodes_repeat(model_dir):
    agent = SB3Agent.from_file(model_dir)
    spec = {
        "data": resolve_data("sp500_20").select(UNIVERSE),
        "window": WINDOW,
        "features": FEATURES,
    }
    first = run_backtest(agent, spec, *EVAL, seed=0)
    assert agent.lstm_state is not None
    second = run_backtest(agent, spec, *EVAL, seed=0)  # run_backtest resets the agent
    np.testing.assert_array_equal(first.weights, second.weights)
    np.testing.assert_array_equal(first.nav, second.nav)
    # without the reset, the first decision would see the last episode's memory
    env = eval_env()
    observation, info = env.reset(seed=0)
    carried_over = agent.act(observation, info)
    agent.reset(seed=0)
    assert agent.lstm_state is None
    fresh = agent.act(observation, info)
    np.testing.assert_array_equal(fresh, SB3Agent.from_file(model_dir).act(observation, info))
    assert not np.array_equal(carried_over, fresh)


# ---------------------------------------------------------------------- resume
def cut_and_resume(store: RunStore, run_id: str, model_dir: Path, stop_after: int) -> None:
    def ctrl_c(date: str, fraction: float) -> None:
        ctrl_c.days += 1  # type: ignore[attr-defined]
        if ctrl_c.days == stop_after:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    ctrl_c.days = 0  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt):
        start(store, run_id, model_dir, ctrl_c)
    assert store.run(run_id).days == stop_after
    resume_backtest(store, run_id)


def start(store: RunStore, run_id: str, model_dir: Path, progress=None) -> None:
    start_backtest(
        store,
        run_id,
        str(model_dir),
        "sp500_20",
        *EVAL,
        seed=0,
        window=WINDOW,
        features=FEATURES,
        universe=UNIVERSE,
        progress=progress,
    )


def same_days(store: RunStore, a: str, b: str) -> bool:
    try:
        pd.testing.assert_frame_equal(store.days(a), store.days(b), check_exact=True)
    except AssertionError:
        return False
    return True


def test_a_resumed_backtest_is_bit_identical_to_an_uninterrupted_one(
    model_dir, tmp_path, monkeypatch
):
    store = RunStore(tmp_path / "runs.sqlite")
    try:
        start(store, "whole", model_dir)
        cut_and_resume(store, "cut", model_dir, stop_after=37)
        assert store.run("cut").status == "finished"
        assert len(store.days("whole")) == 123
        assert same_days(store, "cut", "whole")
        pd.testing.assert_frame_equal(store.fills("cut"), store.fills("whole"), check_exact=True)
        np.testing.assert_array_equal(
            load_result(store, "cut").nav, load_result(store, "whole").nav
        )
        # the checkpoint holds the LSTM state itself, as arrays
        _, _, agent_state = store.checkpoint("cut")
        hidden, cell = agent_state["lstm_state"]
        assert isinstance(cell, np.ndarray) and hidden.shape == cell.shape == (1, 1, 16)
        # the check can tell: an agent that forgot its LSTM state on resume drifts off
        monkeypatch.setattr(SB3Agent, "_transient", (*SB3Agent._transient, "lstm_state"))
        cut_and_resume(store, "forgetful", model_dir, stop_after=37)
        assert not same_days(store, "forgetful", "whole")
    finally:
        store.close()
