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
