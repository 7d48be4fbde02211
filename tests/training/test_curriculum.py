"""Curriculum training (``training.curriculum``): each stage trains on its own env for its
steps, in order, then the run's own env; validation always on the run's env; stages are whole
rollouts, so a resume lands in the same stage; normalisation statistics carry across stages;
a stage that would change the observation, or has bad keys, is a clear error."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest

from marketarena.training.config import ConfigError, build_config, load_config
from marketarena.training.train import Trainer, train

# the module (``marketarena.training`` exports a function of the same name)
train_module = importlib.import_module("marketarena.training.train")
ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
QUIET = ("training.progress_bar=false", "mlflow.enabled=false")
# the smoke config collects rollouts of 4 envs x 64 steps = 256 steps
STAGES = (
    "training.curriculum=[{steps: 200, env: {rules: {commission_bps: 0, slippage_bps: 0}, "
    "episode_length: 32}}, {steps: 300, env: {rules: {commission_bps: 500}}}]"
)
pytestmark = pytest.mark.usefixtures("reset_mlflow_uri")


def smoke(*overrides: str):
    return load_config(SMOKE, (*QUIET, *overrides))


@pytest.fixture
def no_report(monkeypatch):
    """Skip the end-of-run validation report (evaluation has its own tests)."""
    monkeypatch.setattr(Trainer, "validation_report", lambda self, path: self.run_dir)


@pytest.fixture
def spy(monkeypatch):
    """Record, for every training env built, its rules and episode length, and, for every
    ``learn`` call, the step it starts from and the steps it is asked for."""
    seen: dict[str, list] = {"envs": [], "learn": []}
    original = train_module.make_training_env

    def recording(config, data, split):
        seen["envs"].append((dict(config.env.rules), config.env.episode_length, data.name))
        return original(config, data, split)

    monkeypatch.setattr(train_module, "make_training_env", recording)
    from stable_baselines3 import PPO

    learn = PPO.learn

    def recording_learn(self, total_timesteps, *args, **kwargs):
        seen["learn"].append((int(self.num_timesteps), int(total_timesteps)))
        return learn(self, total_timesteps, *args, **kwargs)

    monkeypatch.setattr(PPO, "learn", recording_learn)
    return seen


def test_stages_train_in_order_then_the_run_env(tmp_path, monkeypatch, no_report, spy):
    monkeypatch.chdir(tmp_path)
    config = smoke(
        STAGES,
        "algo.total_timesteps=1024",
        "training.eval_every=256",
        "training.checkpoint_every=1000000",
    )
    result = train(config)
    free, costly = {"commission_bps": 0, "slippage_bps": 0}, {"commission_bps": 500}
    assert spy["envs"] == [(free, 32, "sp500_20"), (costly, 64, "sp500_20"), ({}, 64, "sp500_20")]
    # 200 -> one rollout (256), 300 -> two (512), the rest of 1024 -> one
    assert spy["learn"] == [(0, 256), (256, 512), (768, 256)]
    assert result.timesteps == 1024
    # validation ran on schedule across the stage boundaries, on the run's own env
    assert [e["step"] for e in result.evaluations] == [256, 512, 768, 1024]
    saved = load_config(result.run_dir / "config.yaml")
    assert saved.training.curriculum == config.training.curriculum


@pytest.mark.slow
def test_curriculum_is_deterministic_and_changes_training(tmp_path, monkeypatch, no_report):
    import torch

    from marketarena.agents.sb3_agent import algorithm_class

    monkeypatch.chdir(tmp_path)
    common = (
        "algo.total_timesteps=768",
        "training.eval_every=1000000",
        "training.checkpoint_every=1000000",
    )
    a, b = train(smoke(STAGES, *common)), train(smoke(STAGES, *common))
    plain = train(smoke(*common))

    def params(result):
        return algorithm_class("ppo").load(result.model_path, device="cpu").policy.state_dict()

    pa, pb, pp = params(a), params(b), params(plain)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert a.evaluations == b.evaluations
    assert not all(torch.equal(pa[k], pp[k]) for k in pa)


@pytest.mark.parametrize("observations", [True, False])
def test_normalisation_statistics_carry_across_stages(
    observations, tmp_path, monkeypatch, no_report
):
    """Observation moments (when normalised) and return moments continue across stages."""
    monkeypatch.chdir(tmp_path)
    counts = []
    switch = Trainer.switch_stage

    def moments(env):
        return (env.obs_rms.count if observations else None), env.ret_rms.count

    def recording(self, index):
        before = moments(self.env)
        switch(self, index)
        counts.append((before, moments(self.env)))

    monkeypatch.setattr(Trainer, "switch_stage", recording)
    norm = f"algo.normalize={{observations: {str(observations).lower()}, rewards: true}}"
    train(smoke(STAGES, norm, "algo.total_timesteps=1024", "training.checkpoint_every=1000000"))
    assert len(counts) == 2
    for before, after in counts:
        assert after == before  # continued, not restarted
        assert before[1] > 256 and (before[0] is None or before[0] > 256)
    assert counts[1][0][1] > counts[0][0][1]


@pytest.mark.slow
def test_a_resume_lands_in_the_stage_it_left(tmp_path, monkeypatch, no_report, spy):
    """A run resumed from its checkpoint at step 512 (inside the second stage) rebuilds
    that stage's env, trains the rest of it, then the run's env, to the same total."""
    monkeypatch.chdir(tmp_path)
    config = smoke(
        STAGES,
        "algo.total_timesteps=1024",
        "training.eval_every=256",
        "training.checkpoint_every=512",
    )
    full = train(config)
    run_dir = full.run_dir
    checkpoint = run_dir / "checkpoints" / f"step_{512:012d}"
    assert checkpoint.is_dir()
    shutil.rmtree(run_dir / "checkpoints" / f"step_{1024:012d}")  # as if killed after 512
    shutil.rmtree(run_dir / "model")
    spy["envs"].clear()
    spy["learn"].clear()
    resumed = train(resume=run_dir)
    assert [rules for rules, _, _ in spy["envs"]] == [{"commission_bps": 500}, {}]
    assert spy["learn"] == [(512, 256), (768, 256)]
    assert resumed.timesteps == 1024
    state = json.loads((run_dir / "state.json").read_text())
    assert [e["step"] for e in state["evaluations"]] == [256, 512, 768, 1024]


def test_stage_ends_and_stage_at(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = Trainer(smoke(STAGES, "algo.total_timesteps=1000"), tmp_path)
    trainer.env = trainer.stage_training_env(0)
    trainer.model = train_module.make_model(trainer.config, trainer.env)
    assert trainer.stage_ends() == [256, 768, 1024]
    assert [trainer.stage_at(s) for s in (0, 255, 256, 767, 768, 1023, 5000)] == [
        0,
        0,
        1,
        1,
        2,
        2,
        2,
    ]


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("curriculum", "message"),
    [
        ([{"steps": 600}, {"steps": 424}], "its stages take 1,024 steps, not fewer than"),
        ([{"steps": 10, "env": {"window": 4}}], "curriculum.0.env changes window"),
        ([{"steps": 10, "env": {"features": ["volatility_20"]}}], "changes features"),
        ([{"steps": 10, "env": {"nope": 1}}], "curriculum.0.env.nope: unknown key"),
        ([{"steps": 10, "env": {"rules": {"commision_bps": 1}}}], "unknown trading rule"),
        ([{"steps": 0}], "training.curriculum.0.steps: Input should be greater than"),
        ([{"steps": 10, "envs": {}}], "training.curriculum.0.envs: unknown key"),
    ],
)
def test_bad_stages_name_the_stage(curriculum, message):
    data = load_config(SMOKE).to_dict()
    data["algo"]["total_timesteps"] = 1024
    data["training"]["curriculum"] = curriculum
    with pytest.raises(ConfigError, match="invalid config") as info:
        build_config(data, "smoke.yaml")
    assert message in str(info.value)


def test_a_stage_with_another_universe_size_is_refused(tmp_path, monkeypatch, no_report):
    monkeypatch.chdir(tmp_path)
    config = build_config(
        {
            "env": {"data": "marketarena/Momentum-v0", "window": 8},
            "algo": {
                "total_timesteps": 512,
                "n_envs": 2,
                "hyperparameters": {"n_steps": 64, "batch_size": 64},
            },
            "training": {
                "progress_bar": False,
                "curriculum": [{"steps": 128, "env": {"data": "marketarena/LeadLag-v0"}}],
            },
            "mlflow": {"enabled": False},
        }
    )
    with pytest.raises(ConfigError) as info:
        train(config)
    assert "LeadLag-v0 has 2 assets, the run's data marketarena/Momentum-v0 5" in str(info.value)
