"""The benchmark's reference step is a correct portfolio step, and its variants agree."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from common import Case, time_case
from reference import ReferenceStep


def test_reference_step_by_hand():
    # two assets; returns of +10% / -50% on the first step
    log_returns = np.log(np.array([[1.0, 1.0], [1.1, 0.5], [1.0, 1.0], [1.0, 1.0]]))
    ref = ReferenceStep(log_returns, 1, window=1, cost=0.01, episode_length=2)
    ref.t[:] = 0
    _, reward, _ = ref.step(np.array([[1.0, 1.0, 2.0]]))  # 25% / 25% / 50% cash
    growth = 0.25 * 1.1 + 0.25 * 0.5 + 0.5
    turnover = 0.25 + 0.25 + 0.5  # from all cash
    assert reward[0] == pytest.approx(np.log(growth * (1 - 0.01 * turnover)), rel=1e-12)
    np.testing.assert_allclose(ref.weights[0], [0.275 / growth, 0.125 / growth, 0.5 / growth])


def test_shifted_windows_match_gathered_windows():
    rng = np.random.default_rng(0)
    log_returns = rng.normal(0, 0.01, size=(600, 5))
    a = ReferenceStep(log_returns, 16, window=8, episode_length=20)
    b = ReferenceStep(log_returns, 16, window=8, episode_length=20, shift_windows=True)
    for _ in range(70):  # crosses several auto-resets
        actions = rng.random((16, 6))
        obs_a, r_a, _ = a.step(actions)
        obs_b, r_b, _ = b.step(actions)
        np.testing.assert_array_equal(obs_a, obs_b)
        np.testing.assert_array_equal(r_a, r_b)


def test_time_case_counts_env_steps():
    # each call "steps" 4 envs and takes at least 2 ms, so at most 2,000 env-steps/s
    stats = time_case(
        Case("sleep", "test", 1, 4, lambda: time.sleep(0.002)), min_seconds=0.05, repeats=2
    )
    assert 500 < stats["steps_per_second"] <= 2_000
    assert stats["min"] <= stats["steps_per_second"] <= stats["max"]


def _learning_case(name: str, fps: float, **setting) -> dict:
    base = {
        "policy": "AssetwisePolicy",
        "n_envs": 64,
        "n_steps": 64,
        "batch_size": 1024,
        "n_epochs": 4,
        "gamma": 0.9,
        "gae_lambda": 0.9,
        "vec_normalize": True,
        "torch_threads": 1,
        "timesteps": 4_096,
    }
    return {
        **base,
        **setting,
        "name": name,
        "fps": fps,
        "fps_min": fps,
        "fps_max": fps,
        "wall_s": 4_096 / fps,
        "cpu_per_wall": 1.0,
        "steps_per_cpu_s": fps,
        "rollout_share": 0.4,
        "train_share": 0.6,
        "per_repeat": [],
    }


def _learning_result(a_fps: float = 16_000.0) -> dict:
    """A learning_throughput result of the shape ``run()`` returns, without training."""
    cases = {
        "a": _learning_case("(a) configs/bench/ppo.yaml", a_fps),
        "b": _learning_case("(b) SB3 default PPO, 1 env", 1_000.0, n_envs=1, n_steps=2048),
        "c": _learning_case("(c) old configs/ppo.yaml", 5_000.0, n_envs=16, n_steps=256),
        "knob0": _learning_case("(a) torch_threads=2", a_fps / 4, torch_threads=2),
        "knob1": _learning_case("(a) n_envs=256, n_steps=16", a_fps * 1.1, n_envs=256, n_steps=16),
    }
    for key in ("knob0", "knob1"):
        cases[key]["over_a"] = cases[key]["over_a_per_cpu_s"] = cases[key]["fps"] / a_fps
    return {
        "config": {
            "task": "marketarena/Momentum-v0",
            "split": "train",
            "repeats": 1,
            "quick": True,
            "knobs": True,
            "logical_cpus": 2,
            "affinity": [0, 1],
            "loadavg_before": [0.1, 0.2, 0.3],
            "loadavg_after": [1.0, 0.5, 0.4],
            "torch": "x",
            "stable_baselines3": "y",
            "date": "2026-01-01 00:00 UTC",
        },
        "targets": {
            "fps": 15_000,
            "fps_met": a_fps >= 15_000,
            "a_over_b": 5.0,
            "a_over_b_met": a_fps / 1_000 >= 5.0,
        },
        "cases": cases,
        "ratios": {
            "a_over_b": a_fps / 1_000,
            "a_over_c": a_fps / 5_000,
            "a_over_b_per_repeat": [a_fps / 1_000],
            "a_over_c_per_repeat": [a_fps / 5_000],
            "a_over_b_per_cpu_s": a_fps / 1_000,
            "a_over_c_per_cpu_s": a_fps / 5_000,
        },
        "profile_top15_cumtime": None,
        "seconds": 12.0,
    }


def test_gae_bootstrap_share_of_the_learning_throughput_knobs():
    from learning_throughput import bootstrap_share

    shares = [bootstrap_share(0.9, 0.9, n) for n in (64, 32, 16)]
    assert [round(100 * x) for x in shares] == [7, 13, 26]
    assert bootstrap_share(0.9, 0.9, 1) == pytest.approx(0.81)


def test_learning_throughput_section_in_the_suite(tmp_path):
    import learning_throughput
    import run

    assert "learning_throughput" in run.SECTIONS
    result = _learning_result()
    result["rows"] = learning_throughput.rows(result)
    assert {r["section"] for r in result["rows"]} == {"learning_throughput"}
    targets = run.collect_targets({"learning_throughput": result})
    fps = targets["PPO (bench config) env-steps/s end to end"]
    ratio = targets["bench config / SB3 default PPO"]
    assert (fps["value"], fps["target"], fps["met"]) == (16_000.0, ">= 15,000", True)
    assert (ratio["value"], ratio["target"], ratio["met"]) == (16.0, ">= 5x", True)
    missed = run.collect_targets({"learning_throughput": _learning_result(4_000.0)})
    assert not any(t["met"] for t in missed.values())

    # a rerun of one section replaces it in the saved report and keeps the others
    saved = {
        "machine": run.machine(),
        "quick": True,
        "seconds": 100.0,
        "sections": {"precision": {"rows": [{"case": "x", "value": 1.0, "unit": "u"}]}},
    }
    partial = {
        "machine": run.machine(),
        "quick": True,
        "seconds": 12.0,
        "sections": {"learning_throughput": result},
    }
    report = run.merge_into_saved(partial, run.merge_into_saved(partial, saved))
    assert list(report["sections"]) == ["precision", "learning_throughput"]
    assert [r["sections"] for r in report["reruns"]] == [["learning_throughput"]]
    report["targets"] = run.collect_targets(report["sections"])
    docs = tmp_path / "BENCHMARKS.md"
    run.write_docs(report, "bash benchmarks/run.sh --quick", docs)
    text = docs.read_text()
    assert "## PPO learning throughput on the diagnostic tasks" in text
    assert "## float32 prices" in text
    assert "| (a) configs/bench/ppo.yaml |" in text
    assert "| (a) / (b) | 16.0x |" in text
    assert "Rerun alone since" in text


def test_every_ppo_sweep_variant_is_a_valid_config_that_differs_from_the_shipped_one(tmp_path):
    import ppo_settings_sweep as sweep
    import yaml

    from marketarena.training.config import load_config

    shipped = load_config(sweep.SHIPPED)
    for name, (_, overrides) in sweep.VARIANTS.items():
        data = sweep.merge(yaml.safe_load(sweep.SHIPPED.read_text()), overrides)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        config = load_config(path)  # unknown or mistyped keys fail here
        changed = config.model_dump() != shipped.model_dump()
        assert changed == bool(overrides), name
    lr = sweep.merge(yaml.safe_load(sweep.SHIPPED.read_text()), sweep.VARIANTS["lr_1e-3_300k"][1])
    assert lr["algo"]["hyperparameters"]["learning_rate"] == 0.001
    assert lr["algo"]["hyperparameters"]["n_epochs"] == 4  # a merge, not a replacement
    assert lr["algo"]["total_timesteps"] == 300_000


def test_the_load_test_runs_against_a_served_store_while_a_job_runs(tmp_path):
    import json

    import load_test

    out = tmp_path / "load.json"
    short = ["--duration", "1", "--warmup", "1", "--seed-end", "2009-11-30", "--json", str(out)]
    # the targets are the benchmark's claim, not this test's: its machine may be busy
    code = load_test.main([*short, "--min-rps", "1", "--max-p99-ms", "1e9"])
    figures = json.loads(out.read_text())
    assert code == 0
    assert list(figures["endpoints"]) == [
        "/leaderboard",
        "/runs",
        "/positions/history?model=equal_weight@2009-09-01",
        "/data/coverage",
        "/health",
    ]
    assert all(e["requests"] > 0 and e["errors"] == 0 for e in figures["endpoints"].values())
    assert figures["all"]["requests"] == sum(e["requests"] for e in figures["endpoints"].values())
    before, after = (figures["job"][k] for k in ("before", "after"))
    assert before["status"] == after["status"] == "running"
    [run] = after["progress"]
    assert after["progress"][run]["done"] > before["progress"][run].get("done", 0)
