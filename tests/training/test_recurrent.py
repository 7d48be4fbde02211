"""Recurrent PPO (sb3-contrib) as the fifth algorithm: configs (its LSTM policy by default,
LSTM settings passed through, clear errors for policies it cannot use), a training run whose
model folder loads as a recurrent agent, the bench config and the search space."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from marketarena.agents.sb3_agent import SB3Agent, detect_algorithm
from marketarena.envs.data import resolve_data
from marketarena.evaluation.runner import run_backtest
from marketarena.training import bench, search_spaces
from marketarena.training.config import ConfigError, load_config
from marketarena.training.train import (
    Trainer,
    load_universe,
    make_model,
    make_training_env,
    split_ranges,
    steps_learn_will_take,
    train,
)

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
BENCH = ROOT / "configs" / "bench"
QUIET = ("training.progress_bar=false", "mlflow.enabled=false")
RECURRENT = (*QUIET, "algo.name=recurrent_ppo")
pytestmark = pytest.mark.usefixtures("reset_mlflow_uri")


def build_model(config):
    data = load_universe(config)
    return make_model(config, make_training_env(config, data, split_ranges(config, data)["train"]))


# --------------------------------------------------------------------------- config
def test_recurrent_ppo_gets_its_lstm_policy_and_lstm_settings_pass_through():
    config = load_config(
        SMOKE,
        [
            *RECURRENT,
            "algo.hyperparameters={n_steps: 16, batch_size: 32}",
            "algo.policy_kwargs={lstm_hidden_size: 12, n_lstm_layers: 2, "
            "shared_lstm: true, enable_critic_lstm: false}",
        ],
    )
    assert config.algo.policy == "MlpLstmPolicy"
    assert load_config(SMOKE, [*RECURRENT, "algo.policy=MlpLstmPolicy"]).algo.policy == (
        "MlpLstmPolicy"
    )
    # the resolved config names the policy: a run folder's config.yaml reloads to itself
    assert yaml.safe_load(config.to_yaml())["algo"]["policy"] == "MlpLstmPolicy"
    model = build_model(config)
    assert type(model).__name__ == "RecurrentPPO"
    lstm = model.policy.lstm_actor
    assert (lstm.hidden_size, lstm.num_layers) == (12, 2)
    assert model.policy.shared_lstm and model.policy.lstm_critic is None
    assert list(model.policy.net_arch) == [16]  # smoke.yaml's net_arch reaches the policy
    assert steps_learn_will_take(model, 70) == 128  # whole rollouts of 4 envs x 16 steps


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # the bench's PPO policy has no recurrent form
        (
            ("algo.policy=AssetwisePolicy",),
            r"policy AssetwisePolicy does not support recurrent_ppo \(it has no LSTM\): use "
            r"MlpLstmPolicy",
        ),
        (("algo.policy=MlpPolicy",), r"recurrent_ppo needs policy MlpLstmPolicy"),
        (
            ("algo.hyperparameters={tau: 0.01}",),
            r"algo.hyperparameters: recurrent_ppo has no hyperparameter\(s\) \['tau'\]",
        ),
    ],
)
def test_what_recurrent_ppo_cannot_use_is_a_clear_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SMOKE, [*RECURRENT, *overrides])


def test_the_lstm_policy_needs_recurrent_ppo_and_ppo_hyperparameters_are_accepted():
    with pytest.raises(ConfigError, match=r"policy MlpLstmPolicy needs algo\.name recurrent_ppo"):
        load_config(SMOKE, [*QUIET, "algo.policy=MlpLstmPolicy"])
    hp = (
        "algo.hyperparameters={n_steps: 32, batch_size: 64, n_epochs: 3, clip_range: 0.1, "
        "gae_lambda: 0.9, ent_coef: 0.01, target_kl: 0.05}"
    )
    assert load_config(SMOKE, [*RECURRENT, hp]).algo.hyperparameters["target_kl"] == 0.05
    # discrete actions: RecurrentPPO takes MultiDiscrete action spaces, as PPO does
    assert load_config(SMOKE, [*RECURRENT, "env.action_mapping=discrete"]).algo.name == (
        "recurrent_ppo"
    )
    # switching the bench's PPO config to recurrent_ppo names the policy to change
    with pytest.raises(ConfigError, match="AssetwisePolicy does not support recurrent_ppo"):
        load_config(
            BENCH / "ppo.yaml", ["env.data=marketarena/Noise-v0", "algo.name=recurrent_ppo"]
        )


# ------------------------------------------------------------------------- training
def test_a_recurrent_ppo_run_writes_a_model_folder_that_loads_as_a_recurrent_agent(
    tmp_path, monkeypatch
):
    # the validation report (plots, bootstrap intervals) is checked for ppo in test_train.py
    monkeypatch.setattr(Trainer, "validation_report", lambda self, model: self.run_dir)
    config = load_config(
        SMOKE,
        [
            *RECURRENT,
            "algo.total_timesteps=512",
            "training.eval_every=256",
            "training.checkpoint_every=256",
            "algo.policy_kwargs={lstm_hidden_size: 8}",
            f"training.output_dir={tmp_path / 'runs'}",
        ],
    )
    result = train(config)
    run = result.run_dir
    assert result.timesteps == 512 and [e["step"] for e in result.evaluations] == [256, 512]
    assert load_config(run / "config.yaml") == config
    assert json.loads((run / "manifest.json").read_text())["algorithm"] == "recurrent_ppo"
    for folder in (run / "model", run / "best"):
        assert detect_algorithm(folder / "model.zip") == "recurrent_ppo"  # from the zip alone
        assert json.loads((folder / "agent.json").read_text())["algorithm"] == "recurrent_ppo"
    for checkpoint in (run / "checkpoints").glob("step_*"):
        assert not (checkpoint / "replay_buffer.pkl").exists()  # on-policy: no buffer

    agent = SB3Agent.from_file(run / "best")
    assert agent.name == "recurrent_ppo:smoke" and agent.recurrent
    assert agent.model.policy.lstm_actor.hidden_size == 8
    # the trainer's validation of the live model is what the loaded agent does, exactly:
    # each backtest starts the LSTM from zero
    data = resolve_data(config.env.data).select(config.env.universe)
    start, end = split_ranges(config, data)["validation"]
    spec = {"data": data, "window": config.env.window, "features": config.env.features}
    fresh = run_backtest(agent, spec, start, end, seed=0).metrics()
    for key in ("sharpe", "total_return", "max_drawdown", "annual_turnover"):
        assert fresh[key] == pytest.approx(result.best_validation[key], rel=1e-9, abs=1e-12), key


# ---------------------------------------------------------------- bench and tuning
def test_the_bench_trains_recurrent_ppo_from_its_config():
    agent = bench.resolve_agent("recurrent_ppo")
    assert (agent.kind, agent.algo, agent.config_path.name) == (
        "rl",
        "recurrent_ppo",
        "recurrent_ppo.yaml",
    )
    config = load_config(agent.config_path, ["env.data=marketarena/Momentum-v0"])
    ppo = load_config(BENCH / "ppo.yaml", ["env.data=marketarena/Momentum-v0"])
    assert config.env == ppo.env  # the same task env as PPO's: the two compare directly
    assert config.algo.policy == "MlpLstmPolicy"
    hp = config.algo.hyperparameters
    assert (config.algo.n_envs * hp["n_steps"]) % hp["batch_size"] == 0


def test_recurrent_ppo_tunes_over_ppo_s_space():
    assert search_spaces.space_for("recurrent_ppo", {}) == search_spaces.SPACES["ppo"]
    params = {"n_steps_exp": 5, "batch_size_exp": 9, "n_epochs": 5, "clip_range": 0.1}
    out = search_spaces.to_overrides("recurrent_ppo", params, n_envs=4)
    # a minibatch (steps) cannot exceed the rollout of 4 envs x 32 steps
    assert out["algo"]["hyperparameters"] == {
        "n_steps": 32,
        "batch_size": 128,
        "n_epochs": 5,
        "clip_range": 0.1,
    }
