"""The README's promises: its Python example runs and its commands match .ci/run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_first_python_example_runs(capsys):
    block = re.findall(r"```python\n(.*?)```", README, flags=re.S)[0]
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert re.match(r"2022-12-28 NAV [\d,]+\.\d\d", printed), printed


def test_own_data_example_runs_on_the_shipped_sample(monkeypatch):
    block = next(
        b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if "load_csv" in b
    )
    monkeypatch.chdir(ROOT)  # the README's commands run from the repository
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    env = namespace["env"]
    assert env.data.symbols == ("AXP", "BA", "BAC", "C", "CAT") and env.data.has_ohlc
    observation, info = env.reset(seed=0)
    observation, reward, *_, info = env.step(env.action_space.sample())
    assert np.isfinite(reward)
    assert str(info["date"]) >= "2010-01-04" and observation.shape == env.observation_space.shape


@pytest.mark.slow
def test_vector_env_ppo_example_runs():
    block = next(b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if "PPO" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["model"].num_timesteps == 64 * 64


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    test_command = next(c for c in commands if c.endswith("&& pytest"))
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_the_readme_lists_every_feature_reward_and_action_mapping():
    from marketarena.envs.features import available_features
    from marketarena.envs.rewards import REWARDS
    from marketarena.envs.settings import ACTION_MAPPINGS

    listed = README[README.index("What the env offers") : README.index("Many portfolios in one")]
    for name in (*available_features(), *REWARDS, *ACTION_MAPPINGS):
        assert f"`{name}`" in listed, name


@pytest.mark.slow
def test_a_model_trained_in_python_is_evaluated_with_its_own_observation_settings(
    tmp_path, monkeypatch
):
    """The README's save_agent example, then its evaluate command, as written; then the same
    with a window the evaluate command does not default to: the model's settings travel."""
    import json

    from rich.console import Console
    from stable_baselines3 import PPO

    from marketarena.cli import main
    from marketarena.envs import PortfolioEnv

    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    train = next(b for b in blocks if "PPO" in b)
    save = next(b for b in blocks if "save_agent(" in b)
    command = next(
        line
        for b in re.findall(r"```bash\n(.*?)```", README, flags=re.S)
        for line in b.splitlines()
        if "--agent models/my_ppo" in line
    )
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(train, "README.md", "exec"), namespace)
    exec(compile(save, "README.md", "exec"), namespace)
    console = Console(record=True, width=250)
    assert main([*command.split()[1:], "--output", "eval"], console=console) == 0
    assert "ppo:my_ppo" in console.export_text()

    env = PortfolioEnv(
        "sp500_20", window=7, features=("log_return", "momentum_z_20"), end="2010-12-31"
    )
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, seed=0, device="cpu")
    model.learn(32)
    namespace["save_agent"](model, "models/w7", env)
    meta = json.loads((tmp_path / "models/w7/agent.json").read_text())
    assert (meta["window"], meta["features"], meta["algorithm"]) == (
        7,
        ["log_return", "momentum_z_20"],
        "ppo",
    )
    args = ["evaluate", "--agent", "models/w7", "--start", "2015-01-02", "--end", "2015-03-31"]
    assert main([*args, "--output", "eval7"], console=console) == 0
    assert "ppo:w7" in console.export_text()


def test_arena_example_runs_and_prints_what_the_readme_shows(capsys):
    block = next(
        b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if "ArenaEnv" in b
    )
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    shown = README[README.index(block) + len(block) :]
    shown = shown[shown.index("```text\n") + 8 : shown.index("```", shown.index("```text\n") + 8)]
    assert printed == shown
