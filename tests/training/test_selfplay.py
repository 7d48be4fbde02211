"""Self-play training: the config's errors, the league (growth, cap, seeded draws), what the
opponents see, the learner's action path against an SB3 agent's, an MLflow run in a real
SQLite store, determinism, the ``marketarena selfplay`` command and the saved model as an
agent in a backtest and in the arena.

Every run trains a few hundred timesteps on a tiny synthetic market (3 assets, 300 days).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from rich.console import Console

from marketarena.agents.baselines import EqualWeightAgent
from marketarena.agents.registry import make_agent
from marketarena.agents.sb3_agent import SB3Agent
from marketarena.cli import main
from marketarena.envs.arena import ArenaEnv
from marketarena.envs.core import ActionSpec
from marketarena.envs.data import resolve_data
from marketarena.envs.errors import ConfigError
from marketarena.envs.synthetic import gbm_market
from marketarena.evaluation.runner import run_backtest
from marketarena.training.selfplay import (
    League,
    LeagueMember,
    LeagueProbabilities,
    SelfPlayConfig,
    SelfPlayVecEnv,
    load_selfplay_config,
    train_selfplay,
)

pytestmark = pytest.mark.usefixtures("reset_mlflow_uri")
TOTAL = 256  # 4 rollouts of 32 steps x 2 learner seats


@pytest.fixture(scope="module")
def market_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("selfplay-data") / "gbm.csv"
    gbm_market(3, 300, seed=1).to_long_frame().to_csv(path, index=False)
    return path


def config_dict(market_csv: Path, out: Path, **sections: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "env": {
            "data": str(market_csv),
            "splits": {"validation_start": "2000-09-01", "test_start": "2000-11-01"},
            "window": 4,
            "episode_length": 20,
            "action_mapping": "softmax",
            "impact": {"eta": 0.1, "gamma": 0.05},
        },
        "arena": {"n_agents": 3, "learner_seats": 1, "n_markets": 2},
        "league": {
            "fixed": ["equal_weight:5", "random:5"],
            "snapshot_every": 64,
            "max_snapshots": 2,
        },
        "algo": {
            "total_timesteps": TOTAL,
            "net_arch": [8],
            "hyperparameters": {"n_steps": 32, "batch_size": 32, "n_epochs": 1},
        },
        "training": {"output_dir": str(out), "progress_bar": False},
        "mlflow": {"enabled": False},
    }
    for key, value in sections.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return base


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def parameters(model_path: Path) -> dict:
    return SB3Agent.from_file(model_path).model.policy.state_dict()


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"arena": {"bogus": 1}}, "arena.bogus: unknown key"),
        (
            {"league": {"probabilities": {"latest": 0.5, "snapshots": 0.4, "fixed": 0.2}}},
            "league.probabilities: latest + snapshots + fixed must be 1",
        ),
        (
            {"arena": {"n_agents": 2, "learner_seats": 2}},
            "n_agents (2) must be at least learner_seats + 1 (3)",
        ),
        ({"league": {"fixed": []}}, "there are no fixed opponents"),
        ({"algo": {"n_envs": 4}}, "algo.n_envs: self-play's envs are the learner seats"),
        ({"algo": {"name": "a2c", "hyperparameters": {}}}, "self-play trains ppo, not a2c"),
        ({"env": {"impact": {"eta": -1}}}, "impact.eta must be a finite number >= 0"),
    ],
)
def test_config_errors_name_the_key_and_the_file(market_csv, tmp_path, change, message):
    path = write_config(tmp_path / "bad.yaml", config_dict(market_csv, tmp_path, **change))
    with pytest.raises(ConfigError) as err:
        load_selfplay_config(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_bad_opponents_are_refused_before_a_run_folder_exists(market_csv, tmp_path):
    for spec, message in (
        ("nonsense", "league.fixed.1 ('nonsense'): unknown agent"),
        ("llm:gpt-4o-mini", "league.fixed.1 ('llm:gpt-4o-mini'): reads market snapshots"),
    ):
        data = config_dict(market_csv, tmp_path / "runs", league={"fixed": ["cash", spec]})
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            train_selfplay(SelfPlayConfig.model_validate(data))
    assert not (tmp_path / "runs").exists()


def test_cli_errors_are_one_line(market_csv, tmp_path):
    path = write_config(tmp_path / "c.yaml", config_dict(market_csv, tmp_path))
    console = Console(record=True, width=100)
    code = main(["selfplay", "--config", str(path), "--set", "arena.n_agents=1"], console=console)
    text = console.export_text()
    assert code == 1
    assert text.startswith("error: invalid config in ")
    assert "arena.n_agents: Input should be greater than or equal to 2" in text
    assert "Traceback" not in text


# ----------------------------------------------------------------------------- league
def member(name: str, group: str) -> LeagueMember:
    return LeagueMember(name, group, EqualWeightAgent(name=name))  # type: ignore[arg-type]


def test_draws_follow_the_seeded_probabilities():
    league = League(
        LeagueProbabilities(latest=0.5, snapshots=0.3, fixed=0.2),
        [member("ew", "fixed"), member("bh", "fixed")],
        max_snapshots=5,
    )
    league.set_latest(EqualWeightAgent(name="latest"))
    # before any snapshot: the snapshots' share goes to the others in proportion
    assert league.probabilities() == pytest.approx(
        {"latest": 0.5 / 0.7, "ew": 0.1 / 0.7, "bh": 0.1 / 0.7}
    )
    league.add_snapshot(member("s1", "snapshots"))
    league.add_snapshot(member("s2", "snapshots"))
    expected = {"latest": 0.5, "s1": 0.15, "s2": 0.15, "ew": 0.1, "bh": 0.1}
    assert league.probabilities() == pytest.approx(expected)
    n = 20_000
    draws = [league.draw(np.random.default_rng(7)).name for _ in range(3)]
    assert len(set(draws)) == 1  # one seed, one draw
    rng = np.random.default_rng(0)
    counts = Counter(league.draw(rng).name for _ in range(n))
    for name, p in expected.items():
        # 4 standard errors of a binomial proportion
        assert abs(counts[name] / n - p) < 4 * np.sqrt(p * (1 - p) / n), name
    again = np.random.default_rng(0)
    assert [league.draw(again).name for _ in range(50)] == [
        league.draw(r).name for r in [np.random.default_rng(0)] for _ in range(50)
    ]


def test_the_league_keeps_the_last_snapshots():
    league = League(LeagueProbabilities(), [member("ew", "fixed")], max_snapshots=2)
    dropped = [league.add_snapshot(member(f"s{i}", "snapshots")) for i in range(4)]
    assert [d.name if d else None for d in dropped] == [None, None, "s0", "s1"]
    assert [m.name for m in league.snapshots] == ["s2", "s3"]


def drawn_opponents(market_csv: Path, seed: int, episodes: int) -> list[str]:
    """The members a 3-seat market drew for its 2 opponent seats over ``episodes`` one-step
    episodes, with every group populated (baselines stand in for the learner's copies)."""
    data = resolve_data(str(market_csv))
    market = ArenaEnv(3, data, window=4, episode_length=1, end="2000-08-31")
    league = League(
        LeagueProbabilities(latest=0.5, snapshots=0.3, fixed=0.2),
        [member("ew", "fixed"), member("bh", "fixed")],
    )
    league.set_latest(EqualWeightAgent(name="latest"))
    league.add_snapshot(member("s1", "snapshots"))
    league.add_snapshot(member("s2", "snapshots"))
    env = SelfPlayVecEnv([market], 1, league, ActionSpec("normalize"))
    env.seed(seed)
    env.reset()
    names = []
    for _ in range(episodes):
        names += [m.name for m in env.drawn[0]]
        env.step(np.array([[0.0, 0.0, 0.0, 1.0]]))
    return names


def test_the_env_draws_opponents_per_the_seeded_probabilities(market_csv):
    names = drawn_opponents(market_csv, 0, 1500)
    assert names == drawn_opponents(market_csv, 0, 1500)
    assert names != drawn_opponents(market_csv, 1, 1500)
    n = len(names)
    counts = Counter(names)
    for name, p in {"latest": 0.5, "s1": 0.15, "s2": 0.15, "ew": 0.1, "bh": 0.1}.items():
        assert abs(counts[name] / n - p) < 4 * np.sqrt(p * (1 - p) / n), name


# ---------------------------------------------------------------------- the vec env
class Recorder:
    """An opponent that records what it is given and buys its first asset."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[tuple[np.ndarray, dict]] = []

    def reset(self, *, seed: int | None = None) -> None:
        pass

    def act(self, observation: np.ndarray, info: dict) -> np.ndarray:
        self.seen.append((observation.copy(), dict(info)))
        action = np.zeros(len(info["weights"]))
        action[0] = 1.0
        return action


def tiny_vec_env(market_csv: Path, opponent: Any, spec: ActionSpec) -> SelfPlayVecEnv:
    data = resolve_data(str(market_csv))
    market = ArenaEnv(
        2,
        data,
        window=4,
        episode_length=20,
        end="2000-08-31",
        impact={"eta": 0.1, "gamma": 0.05},
    )
    league = League(
        LeagueProbabilities(latest=0, snapshots=0, fixed=1), [LeagueMember("r", "fixed", opponent)]
    )
    env = SelfPlayVecEnv([market], 1, league, spec)
    env.seed(3)
    return env


def test_opponents_act_on_their_own_observation_never_the_learners_action(market_csv):
    spec = ActionSpec("normalize")
    runs = []
    for learner_action in ([1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]):
        env = tiny_vec_env(market_csv, Recorder(), spec)
        obs = env.reset()
        env.step(np.array([[0.0, 0.0, 0.0, 1.0]]))
        env.step(np.array([learner_action]))
        (opponent,) = env.opponents[0]
        runs.append((obs, opponent.seen, env.markets[0].sim.weight.copy()))
    (obs_a, seen_a, weights_a), (_, seen_b, weights_b) = runs
    # the observation the opponent got is PortfolioEnv's shape, and at the step where the
    # learner's actions differ it is the same in both runs
    assert seen_a[1][0].shape == obs_a.shape[1:]
    # its own book: the observation ends with its weights and cash
    np.testing.assert_allclose(seen_a[1][0][-4:], seen_a[1][1]["weights"], atol=1e-6)
    for (o_a, i_a), (o_b, i_b) in zip(seen_a, seen_b, strict=True):
        np.testing.assert_array_equal(o_a, o_b)
        np.testing.assert_array_equal(i_a["weights"], i_b["weights"])
    # (the learners did trade differently, and impact reached the opponent's fills)
    assert not np.allclose(weights_a[0], weights_b[0])
    assert weights_a[1][0] > 0.9 and weights_b[1][0] > 0.9


def test_the_learners_actions_become_weights_as_an_sb3_agent_makes_them(market_csv):
    """The learner acting with its deterministic policy in one seat and the same policy as
    the ``latest`` opponent (through :class:`SB3Agent`, with a no-trade band) in the other:
    the two seats hold the same weights after every step."""
    from stable_baselines3 import PPO

    spec = ActionSpec("softmax", softmax_scale=3.0, rebalance_band=0.05)
    env = tiny_vec_env(market_csv, None, spec)
    model = PPO(
        "MlpPolicy", env, n_steps=16, batch_size=16, seed=0, policy_kwargs={"net_arch": [8]}
    )
    env.league = League(LeagueProbabilities(latest=1, snapshots=0, fixed=0))
    env.league.set_latest(SB3Agent(model, "latest", action_spec=spec))
    obs = env.reset()
    traded = 0
    for _ in range(40):  # two episodes: across the auto-reset too
        action, _ = model.predict(obs, deterministic=True)
        obs, _, dones, _ = env.step(action)
        weights = env.markets[0].sim.weight
        if not dones[0]:
            np.testing.assert_allclose(weights[0], weights[1], rtol=0, atol=1e-12)
            traded += int(weights[0, -1] < 1.0)
    assert traded > 0


# ------------------------------------------------------------------- a tracked run
@pytest.fixture(scope="module")
def tracked_run(market_csv, tmp_path_factory):
    """One run with MLflow on a fresh SQLite store."""
    import mlflow

    root = tmp_path_factory.mktemp("selfplay-run")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        data = config_dict(market_csv, root / "runs", mlflow={"enabled": True, "experiment": "sp"})
        result = train_selfplay(SelfPlayConfig.model_validate(data))
    finally:
        patch.undo()
        mlflow.set_tracking_uri(None)
    return result, uri


def test_the_league_grows_every_snapshot_and_is_capped(tracked_run):
    result, _ = tracked_run
    league = json.loads((result.run_dir / "league.json").read_text())
    # rollouts of 64 steps: snapshots at 64, 128, 192 and the end (256); the last 2 kept
    kept = [m["step"] for m in league["members"] if m["group"] == "snapshots"]
    assert kept == [192, 256]
    assert [m["step"] for m in league["dropped_snapshots"]] == [64, 128]
    folders = sorted(p.name for p in (result.run_dir / "league").iterdir())
    assert folders == ["snapshot_000000000192", "snapshot_000000000256"]
    names = [m["name"] for m in league["members"]]
    assert names == ["latest", "snapshot_192", "snapshot_256", "equal_weight:5", "random:5"]
    # every opponent faced is a member the league had
    assert set(result.record) <= {*names, "snapshot_64", "snapshot_128"} | {
        "group:latest",
        "group:snapshots",
        "group:fixed",
    }


def test_the_mlflow_run_has_params_metrics_and_artifacts(tracked_run, market_csv):
    from mlflow.tracking import MlflowClient

    result, uri = tracked_run
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result.run_id)
    params = run.data.params
    assert params["arena.n_agents"] == "3"
    assert params["league.snapshot_every"] == "64"
    assert params["seed"] == "0"
    assert params["env.impact.eta"] == "0.1"
    assert params["split.train.start"] == "2000-01-03"
    tags = run.data.tags
    assert tags["data_sha256"] == resolve_data(str(market_csv)).content_hash()
    assert tags["git_sha"] and tags["seed"] == "0" and tags["kind"] == "selfplay"
    metrics = run.data.metrics
    for key in (
        "selfplay/win_rate",
        "selfplay/learner_return",
        "selfplay/episode_reward",
        "league/latest/win_rate",
        "league/group_fixed/win_rate",
        "rollout/ep_rew_mean",
        "train/loss",
    ):
        assert key in metrics, key
    assert 0 <= metrics["selfplay/win_rate"] <= 1
    history = client.get_metric_history(result.run_id, "selfplay/league_size")
    sizes = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert sizes[0] < sizes[-1] <= 5  # the league grew, up to its cap
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "manifest.json", "league.json", "model"} <= artifacts
    model_files = {a.path for a in client.list_artifacts(result.run_id, "model")}
    assert {"model/model.zip", "model/agent.json"} <= model_files
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["git_sha"] == tags["git_sha"]


def test_the_model_acts_as_an_agent_in_a_backtest_and_in_the_arena(tracked_run, market_csv):
    result, _ = tracked_run
    for spec in (str(result.model_dir), f"ppo:{result.model_path}"):
        agent = make_agent(spec)
        backtest = run_backtest(
            agent,
            {"data": resolve_data(str(market_csv)), "window": 4, "episode_length": None},
            "2000-09-01",
            "2000-10-31",
        )
        assert len(backtest.nav) > 20 and np.isfinite(backtest.nav).all()
    # in an arena seat it sees PortfolioEnv's observation (the arena's extra entries cut)
    arena = ArenaEnv(
        2, str(market_csv), window=4, episode_length=None, start="2000-09-01", end="2000-10-31"
    )
    agents = [make_agent(str(result.model_dir)), EqualWeightAgent()]
    obs, infos = arena.reset(seed=0)
    dim = arena.core.obs_dim
    while arena.agents:
        actions = {
            name: agent.act(obs[name][:dim], infos[name])
            for name, agent in zip(arena.possible_agents, agents, strict=True)
        }
        obs, _, _, _, infos = arena.step(actions)
    assert infos["agent_0"]["nav"] > 0


def test_same_seed_same_model_other_seed_another(market_csv, tmp_path):
    import torch

    def run(seed: int, where: str) -> dict:
        data = config_dict(market_csv, tmp_path / where, seed=seed)
        return parameters(train_selfplay(SelfPlayConfig.model_validate(data)).model_path)

    a, b, c = run(0, "a"), run(0, "b"), run(1, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_the_command_trains_and_reports_the_league(market_csv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "c.yaml", config_dict(market_csv, tmp_path / "runs"))
    console = Console(record=True, width=160)
    assert main(["selfplay", "--config", str(path), "--set", "seed=2"], console=console) == 0
    text = console.export_text()
    assert f"trained {TOTAL} timesteps" in text
    assert "league: latest, snapshot_192, snapshot_256, equal_weight:5, random:5" in text
    assert "vs group:latest:" in text
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("tiny__ppo__2__")
    assert f"model: runs/{run_dir.name}/model" in text


def test_the_shipped_config_trains(tmp_path):
    """configs/selfplay/sp500.yaml, cut to one market and one short rollout."""
    shipped = Path(__file__).resolve().parents[2] / "configs" / "selfplay" / "sp500.yaml"
    config = load_selfplay_config(
        shipped,
        [
            "arena.n_markets=1",
            "algo.total_timesteps=16",
            "algo.hyperparameters={n_steps: 16, batch_size: 16, n_epochs: 1}",
            f"training.output_dir={tmp_path}",
            "training.progress_bar=false",
            "mlflow.enabled=false",
        ],
    )
    assert config.env.to_settings().impact.eta > 0 and config.arena.reward_mode == "relative"
    result = train_selfplay(config)
    assert result.timesteps == 16
    agent = make_agent(str(result.model_dir))
    assert agent.observation["symbols"] == ["JNJ", "JPM", "KO", "PG", "XOM"]
