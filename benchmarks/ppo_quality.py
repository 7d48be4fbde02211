"""Does a short PPO run beat random weights? Validation and test Sharpe over several seeds.

PPO is trained with ``marketarena.training`` from ``configs/ppo.yaml`` (the bundled 20-stock
panel; train 1990-2011, validate 2012-2014, test 2015-2022; 5 + 5 bps costs) with a short
budget, MLflow off, in a temporary folder; everything else is the config file's. Training keeps
the best model on the validation split (by Sharpe). That model is then evaluated with
:func:`marketarena.evaluation.evaluate.evaluate` on the validation split and, once all seeds
are trained, on the test split (used only here, for reporting), next to:

* ``random``: Dirichlet(1) weights over assets and cash redrawn every step, and ``random:21``:
  redrawn monthly, each over several seeds (their median Sharpe is the bar);
* ``buy_and_hold`` (equal weights bought once) and ``equal_weight`` (rebalanced monthly);
* the policy each seed starts from, before any update (saved with fresh observation
  statistics): what training has to improve on.

Every backtest uses the training config's window, features, universe and trading rules.
"Beats X" means a Sharpe above X's (for the random agents: above their median over seeds).
The validation figures are optimistic for PPO: the model was selected on that split. The test
figures are not.

Run: ``taskset -c 1 .venv/bin/python benchmarks/ppo_quality.py [--quick]``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

SECTION = "ppo_quality"
ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "ppo.yaml"
RANDOM_AGENTS = ("random", "random:21")
BASELINES = ("buy_and_hold", "equal_weight")
SPLITS = ("validation", "test")
#: seeds, PPO timesteps per seed, validation every N timesteps, seeds per random agent
FULL = {"seeds": (0, 1, 2), "timesteps": 49_152, "eval_every": 8_192, "random_seeds": 10}
QUICK = {"seeds": (0,), "timesteps": 4_096, "eval_every": 4_096, "random_seeds": 3}


def _train(seed: int, budget: dict[str, Any], output_dir: Path) -> tuple[Any, Any, float]:
    from marketarena.training.config import load_config
    from marketarena.training.train import train

    overrides = [
        f"seed={seed}",
        f"name=ppo_seed{seed}",  # distinct agent names in one evaluation
        f"algo.total_timesteps={budget['timesteps']}",
        f"training.eval_every={budget['eval_every']}",
        f"training.checkpoint_every={10**12}",  # no checkpoints: nothing resumes these runs
        f"training.output_dir={output_dir}",
        "training.progress_bar=false",
        "mlflow.enabled=false",
    ]
    config = load_config(CONFIG, overrides)
    start = time.perf_counter()
    result = train(config)
    return config, result, time.perf_counter() - start


def _untrained(config: Any, output_dir: Path) -> Path:
    """The policy PPO starts from (same seed, same network, fresh observation statistics),
    saved the way training saves a model: what training has to improve on."""
    from stable_baselines3.common.utils import set_random_seed

    from marketarena.training.train import Trainer, make_model, make_training_env

    config = config.model_copy(update={"name": f"untrained_seed{config.seed}"})
    set_random_seed(config.seed)
    trainer = Trainer(config, output_dir)
    trainer.env = make_training_env(config, trainer.data, trainer.ranges["train"])
    trainer.model = make_model(config, trainer.env)
    return trainer.save_model(output_dir / f"untrained_seed{config.seed}").parent


def _evaluate(
    config: Any, split: tuple[str, str], agents: tuple[str, ...], seeds: int
) -> dict[str, dict[str, float]]:
    """``{agent: {metric: median over seeds, "sharpe_min": .., "sharpe_max": ..}}``."""
    from marketarena.evaluation.evaluate import EvaluationConfig, evaluate

    e = config.env
    report = evaluate(
        EvaluationConfig(
            agents=agents,
            data=e.data,
            start=split[0],
            end=split[1],
            seeds=seeds,
            benchmark=None,
            include_baselines=False,
            rules=e.rules,
            window=e.window,
            features=e.features,
            universe=e.universe,
        )
    )
    out = {}
    for evaluation in report.evaluations:
        agg = evaluation.aggregate()
        keys = ("sharpe", "total_return", "max_drawdown", "annual_turnover")
        row = {k: agg[k]["median"] for k in keys}
        row.update(sharpe_min=agg["sharpe"]["min"], sharpe_max=agg["sharpe"]["max"])
        row["seeds"] = len(evaluation.results)
        row["start"], row["end"] = (
            str(evaluation.results[0].dates[0]),
            str(evaluation.results[0].dates[-1]),
        )
        out[evaluation.agent] = row
    return out


def run(quick: bool = False) -> dict[str, Any]:
    from marketarena.training.train import load_universe, split_ranges

    budget = QUICK if quick else FULL
    trained = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ppo_quality_") as tmp:
        for seed in budget["seeds"]:
            config, result, seconds = _train(seed, budget, Path(tmp))
            model_dir = (result.best_model_path or result.model_path).parent
            untrained = _untrained(config, Path(tmp))
            trained.append((seed, config, result, seconds, model_dir, untrained))
        train_seconds = time.perf_counter() - started
        config = trained[0][1]
        ranges = split_ranges(config, load_universe(config))
        ppo_dirs = tuple(str(d) for t in trained for d in t[4:])
        splits: dict[str, Any] = {}
        # validation first; the test split is evaluated once, after all training is done
        for split in SPLITS:
            table = _evaluate(config, ranges[split], (*ppo_dirs, *BASELINES), 1)
            table |= _evaluate(config, ranges[split], RANDOM_AGENTS, budget["random_seeds"])
            splits[split] = table
    seeds = []
    for seed, cfg, result, seconds, *_ in trained:
        name = f"ppo:{cfg.name}"
        untrained = f"ppo:untrained_seed{seed}"
        best = result.best_validation
        seeds.append(
            {
                "seed": seed,
                "agent": name,
                "train_s": seconds,
                "timesteps": result.timesteps,
                "evaluations": len(result.evaluations),
                "best_step": best.get("step"),
                "training_validation_sharpe": best.get("sharpe"),
                "validation_sharpe_by_step": {e["step"]: e["sharpe"] for e in result.evaluations},
                **{split: splits[split].pop(name) for split in SPLITS},
                "untrained": {split: splits[split].pop(untrained) for split in SPLITS},
            }
        )
    return {
        "config": {
            "file": str(CONFIG.relative_to(ROOT)),
            "quick": quick,
            "seeds": list(budget["seeds"]),
            "timesteps": budget["timesteps"],
            "eval_every": budget["eval_every"],
            "n_envs": config.algo.n_envs,
            "net_arch": list(config.algo.net_arch),
            "torch_threads": config.algo.torch_threads,
            "random_seeds": budget["random_seeds"],
            "rules": dict(config.env.rules),
            "window": config.env.window,
            "features": list(config.env.features),
            "splits": {k: list(v) for k, v in ranges.items()},
        },
        "seeds": seeds,
        "baselines": splits,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - started,
    }


def verdicts(result: dict[str, Any], split: str) -> dict[str, Any]:
    """Per seed and per bar (each random agent's median Sharpe, buy-and-hold's, equal
    weight's): is PPO's Sharpe above it?"""
    table = result["baselines"][split]
    ppo = [s[split]["sharpe"] for s in result["seeds"]]
    bars = {agent: table[agent]["sharpe"] for agent in (*RANDOM_AGENTS, *BASELINES)}
    untrained = [s["untrained"][split]["sharpe"] for s in result["seeds"]]
    return {
        "ppo": ppo,
        "ppo_median": statistics.median(ppo),
        "untrained": untrained,
        "beats_untrained": [x > u for x, u in zip(ppo, untrained, strict=True)],
        "bars": bars,
        "beats": {agent: [x > bar for x in ppo] for agent, bar in bars.items()},
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    cfg = result["config"]
    n = len(result["seeds"])
    out: list[dict[str, Any]] = []

    def add(case: str, value: Any, unit: str, note: str) -> None:
        out.append({"section": SECTION, "case": case, "value": value, "unit": unit, "note": note})

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    budget = (
        f"{cfg['timesteps']:,} timesteps, n_envs {cfg['n_envs']}, net {cfg['net_arch']}, "
        f"{cfg['file']}"
    )
    for split in SPLITS:
        a, b = cfg["splits"][split]
        v = verdicts(result, split)
        table = result["baselines"][split]
        for i, s in enumerate(result["seeds"]):
            r = s[split]
            beats = ", ".join(f"{agent} {yes(v['beats'][agent][i])}" for agent in v["bars"])
            note = (
                f"beats: {beats}, its untrained policy ({v['untrained'][i]:.2f}) "
                f"{yes(v['beats_untrained'][i])}; return {r['total_return']:+.1%}, turnover "
                f"{r['annual_turnover']:.1f}/yr"
            )
            if split == "validation":
                by_step = ", ".join(
                    f"{x:.2f}" for _, x in sorted(s["validation_sharpe_by_step"].items())
                )
                note += (
                    f"; best of {s['evaluations']} evaluations ({by_step}), at step "
                    f"{s['best_step']:,}; trained in {s['train_s']:.0f} s"
                )
                logged = s["training_validation_sharpe"]
                if logged is None or abs(logged - r["sharpe"]) > 1e-9:
                    note += f"; MISMATCH: training's own validation Sharpe was {logged}"
            add(f"PPO seed {s['seed']} {split} Sharpe", r["sharpe"], "Sharpe", note)
        add(
            f"PPO median {split} Sharpe",
            v["ppo_median"],
            "Sharpe",
            f"median of {n} seed(s); {budget}; {split} {a}..{b}",
        )
        add(
            f"PPO untrained median {split} Sharpe",
            statistics.median(v["untrained"]),
            "Sharpe",
            "the policy each seed starts from, before any update: "
            + ", ".join(f"{x:.2f}" for x in v["untrained"]),
        )
        for agent in (*RANDOM_AGENTS, *BASELINES):
            t = table[agent]
            note = (
                f"{split} {a}..{b}; return {t['total_return']:+.1%}, turnover "
                f"{t['annual_turnover']:.1f}/yr"
            )
            if t["seeds"] > 1:
                note = (
                    f"median of {t['seeds']} seeds (range {t['sharpe_min']:.2f}.."
                    f"{t['sharpe_max']:.2f}); " + note
                )
            add(f"{agent} {split} Sharpe", t["sharpe"], "Sharpe", note)
        add(
            f"PPO beats its untrained policy on {split}",
            sum(v["beats_untrained"]),
            f"of {n} seeds",
            "the trained (best on validation) model's Sharpe above that of the same seed's "
            "initial policy",
        )
        for agent, bar in v["bars"].items():
            what = "median Sharpe over seeds" if agent in RANDOM_AGENTS else "Sharpe"
            add(
                f"PPO beats {agent} on {split}",
                sum(v["beats"][agent]),
                f"of {n} seeds",
                f"PPO Sharpe above {agent}'s {what} ({bar:.2f}); the median PPO "
                f"({v['ppo_median']:.2f}) {'does' if v['ppo_median'] > bar else 'does not'}",
            )
    add(
        "wall time",
        result["seconds"],
        "s",
        f"training {result['train_seconds']:.0f} s for {n} seed(s), the rest evaluation",
    )
    return out


if __name__ == "__main__":
    from common import section_main

    section_main(__doc__, run, rows, "one seed, a tiny budget")
