"""The backtest runner: results, persistence, benchmark alignment, multi-seed aggregates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from marketarena.agents import BuyAndHoldAgent, EqualWeightAgent, RandomAgent
from marketarena.agents.base import Composite, Diagnosable, ReadsSnapshot, Resumable
from marketarena.envs import MarketData, PortfolioEnv
from marketarena.envs.settings import EnvSettings, setting_names
from marketarena.envs.synthetic import gbm_market
from marketarena.evaluation import metrics
from marketarena.evaluation.ensembles import make_ensemble
from marketarena.evaluation.runner import (
    AgentEvaluation,
    BacktestResult,
    agent_diagnostics,
    align_benchmark,
    evaluate_agents,
    interquartile_mean,
    make_backtest_env,
    run_backtest,
    run_episode,
    snapshot_lookback,
)


@pytest.fixture(scope="module")
def market() -> MarketData:
    return gbm_market(n_assets=4, n_periods=260, seed=7)


@pytest.fixture(scope="module")
def spec(market) -> dict:
    return {"data": market, "window": 5, "rules": {"commission_bps": 10.0}}


def test_spec_run_covers_the_range_and_records_fills(market, spec):
    start, end = str(market.dates[50]), str(market.dates[120])
    res = run_backtest(EqualWeightAgent(rebalance_every=10), spec, start, end, seed=0)
    assert str(res.dates[0]) == start and str(res.dates[-1]) == end
    assert len(res.nav) == len(res.dates) == len(res.weights) == 71
    assert len(res.turnover) == len(res.costs) == 70
    rebalances = int(np.count_nonzero(res.turnover))
    assert rebalances == 7 and len(res.fills) == 4 * rebalances
    assert set(res.fills.columns) == {"date", "symbol", "side", "shares", "price", "cost"}
    np.testing.assert_allclose(res.fills["cost"].sum(), res.costs.sum())
    assert res.settings["rules"]["commission_bps"] == 10.0
    assert res.settings["data"]["sha256"] == market.content_hash()


def test_a_result_stores_the_env_settings_and_they_rebuild_the_run(market, spec, tmp_path):
    start, end = str(market.dates[50]), str(market.dates[120])
    res = run_backtest(EqualWeightAgent(rebalance_every=10), spec, start, end, seed=0)
    # every setting, as the backtest ran it: one episode over the range, from its start
    stored = {k: res.settings[k] for k in setting_names()}
    assert (stored["start"], stored["end"], stored["window"]) == (start, end, 5)
    assert stored["episode_length"] is None and stored["random_start"] is False
    again = BacktestResult.load(res.save(tmp_path / "res.json"))
    settings = EnvSettings.from_dict({k: again.settings[k] for k in setting_names()})
    rerun = run_backtest(
        EqualWeightAgent(rebalance_every=10), {"data": market, "settings": settings}, seed=0
    )
    np.testing.assert_array_equal(rerun.nav, res.nav)


def test_a_spec_with_settings_runs_as_a_backtest(market):
    # the settings' episode shape is replaced by one episode over the whole range
    settings = EnvSettings(window=5, episode_length=20, random_start=True)
    res = run_backtest(BuyAndHoldAgent(), {"data": market, "settings": settings}, seed=0)
    assert len(res.turnover) == market.n_periods - 1 - 5
    assert res.settings["episode_length"] is None and res.settings["window"] == 5


def test_metrics_are_the_summary_of_the_navs(spec):
    res = run_backtest(RandomAgent(rebalance_every=5), spec, seed=1)
    table = res.metrics()
    returns = res.nav[1:] / res.nav[:-1] - 1
    assert table["sharpe"] == pytest.approx(metrics.sharpe_ratio(returns))
    assert table["total_return"] == pytest.approx(res.nav[-1] / res.nav[0] - 1)
    assert table["total_costs"] == pytest.approx(res.costs.sum())
    assert table["number_of_trades"] == len(res.fills)
    assert table["final_nav"] == res.nav[-1]


@pytest.mark.parametrize("suffix", ["", ".json"])
def test_save_and_load_round_trip(tmp_path, market, spec, suffix):
    bench = pd.Series(
        np.linspace(100, 130, market.n_periods), index=pd.DatetimeIndex(market.dates), name="IDX"
    )
    res = run_backtest(RandomAgent(rebalance_every=3), spec, seed=2, benchmark=bench)
    path = res.save(tmp_path / f"run{suffix}")
    back = BacktestResult.load(path)
    for field in ("dates", "nav", "weights", "turnover", "costs", "benchmark"):
        np.testing.assert_array_equal(getattr(back, field), getattr(res, field))
    assert (back.agent, back.seed, back.symbols, back.benchmark_name) == (
        res.agent,
        res.seed,
        res.symbols,
        "IDX",
    )
    pd.testing.assert_frame_equal(
        back.fills.reset_index(drop=True), res.fills.reset_index(drop=True), check_dtype=False
    )
    assert back.metrics() == pytest.approx(res.metrics(), nan_ok=True)
    with pytest.raises(FileNotFoundError):
        BacktestResult.load(tmp_path / "missing")


def test_benchmark_alignment_takes_the_last_level_on_or_before_each_date():
    dates = np.array(
        ["2024-01-02", "2024-01-03", "2024-01-05", "2024-01-08"], dtype="datetime64[D]"
    )
    index = pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-04", "2024-01-08"])
    series = pd.Series([10.0, 11.0, 12.0, 13.0], index=index)
    levels, name = align_benchmark(series, dates)
    np.testing.assert_array_equal(levels, [10.0, 11.0, 12.0, 13.0])
    assert name == "benchmark"
    late = series.copy()
    late.index = late.index + pd.Timedelta(days=5)
    with pytest.raises(ValueError, match="starts on 2024-01-06, after the backtest's first date"):
        align_benchmark(late, dates)
    with pytest.raises(ValueError, match="more than a week before"):
        align_benchmark(series, dates + np.timedelta64(30, "D"))
    with pytest.raises(ValueError, match="non-positive"):
        align_benchmark(series * 0, dates)


def test_benchmark_must_be_one_series(market, spec):
    with pytest.raises(ValueError, match="has 4 columns"):
        run_backtest(BuyAndHoldAgent(), spec, seed=0, benchmark=market)


def test_interquartile_mean_by_hand():
    assert interquartile_mean([1, 2, 3, 4, 5, 6, 7, 8]) == 4.5  # mean of 3, 4, 5, 6
    assert interquartile_mean([5, 1, 4, 2, 3]) == 3.0  # 2, 3, 4
    assert interquartile_mean([7.0]) == 7.0
    assert np.isnan(interquartile_mean([float("nan")]))
    assert interquartile_mean([1, 2, 3, 100, float("nan")]) == 2.5  # NaN dropped; 2, 3


def test_many_seeds_aggregate(spec):
    (evaluation,) = evaluate_agents([RandomAgent(rebalance_every=2)], spec, seeds=[0, 1, 2, 3])
    assert isinstance(evaluation, AgentEvaluation)
    assert [r.seed for r in evaluation.results] == [0, 1, 2, 3]
    sharpes = [r.metrics()["sharpe"] for r in evaluation.results]
    assert len(set(sharpes)) == 4  # different seeds, different runs
    agg = evaluation.aggregate()["sharpe"]
    assert agg["median"] == pytest.approx(np.median(sharpes))
    assert agg["iqm"] == pytest.approx(np.mean(sorted(sharpes)[1:3]))
    assert (agg["min"], agg["max"]) == (min(sharpes), max(sharpes))


def test_agent_names_must_be_unique(spec):
    with pytest.raises(ValueError, match=r"repeated: \['random'\]"):
        evaluate_agents([RandomAgent(), RandomAgent()], spec)


def test_ready_env_is_used_as_given(market):
    env = PortfolioEnv(market, window=5, episode_length=30, random_start=False)
    res = run_backtest(BuyAndHoldAgent(), env, seed=0)
    assert len(res.turnover) == 30 and not res.fills_recorded  # not recording: no fills kept
    assert np.isnan(res.metrics()["number_of_trades"])
    with pytest.raises(ValueError, match="spec dict"):
        run_backtest(BuyAndHoldAgent(), env, start="2000-03-01")


def test_daily_frame_of_a_wide_universe_is_built_without_fragmentation(recwarn):
    # AI-Trader's NASDAQ-100: more than 100 weight columns used to trigger pandas'
    # PerformanceWarning once per column
    wide = gbm_market(n_assets=120, n_periods=40, seed=3)
    res = run_backtest(EqualWeightAgent(), {"data": wide, "window": 5}, seed=0)
    frame = res.to_frame()
    assert not [w for w in recwarn if issubclass(w.category, pd.errors.PerformanceWarning)]
    assert list(frame.columns[:5]) == ["date", "nav", "return", "turnover", "costs"]
    assert list(frame.columns[5:]) == [f"w_{s}" for s in wide.symbols] + ["w_cash"]
    np.testing.assert_array_equal(frame["w_cash"], res.weights[:, -1])
    np.testing.assert_array_equal(frame["nav"], res.nav)
    assert np.isnan(frame["return"].iloc[0]) and frame["turnover"].iloc[0] == 0.0


# ------------------------------------------------------------- one episode loop, with a hook
def test_the_step_hook_sees_every_step_in_order(market, spec):
    seen = []
    start, end = str(market.dates[50]), str(market.dates[80])
    res = run_backtest(
        RandomAgent(),
        spec,
        start,
        end,
        seed=3,
        on_step=lambda step, info: seen.append((step, info["date"], info["nav"])),
    )
    assert [step for step, _, _ in seen] == list(range(1, len(res.nav)))
    np.testing.assert_array_equal([date for _, date, _ in seen], res.dates[1:])
    np.testing.assert_array_equal([nav for _, _, nav in seen], res.nav[1:])


def test_an_episode_restored_from_a_checkpoint_continues_the_same_run(market, spec):
    """What a persisted run does: the hook checkpoints the env and the agent after a step; a
    fresh env and agent restored from it run the same loop on, bit for bit."""
    start, end = str(market.dates[50]), str(market.dates[120])
    whole = run_backtest(RandomAgent(), spec, start, end, seed=5)
    env, agent = make_backtest_env(spec, start, end), RandomAgent()
    saved = {}

    def checkpoint(step, info):
        if step == 20:
            saved.update(env=env.get_state(), agent=agent.get_state())

    observation, info = env.reset(seed=5)
    agent.reset(seed=5)
    first = run_episode(agent, env, observation, info, on_step=checkpoint)
    np.testing.assert_array_equal(first.nav, whole.nav)
    env, agent = make_backtest_env(spec, start, end), RandomAgent()
    env.reset(seed=5)
    agent.reset(seed=5)
    observation, info = env.set_state(saved["env"])
    agent.set_state(saved["agent"])
    steps = []
    rest = run_episode(
        agent, env, observation, info, step=20, on_step=lambda step, info: steps.append(step)
    )
    assert steps == list(range(21, len(whole.nav)))
    np.testing.assert_array_equal(rest.nav, whole.nav[20:])
    np.testing.assert_array_equal(rest.turnover, whole.turnover[20:])
    # restored at its end (a run that stopped after its last day): no step is taken
    at_end = run_episode(agent, env, *env.set_state(env.get_state()), step=len(whole.nav) - 1)
    assert at_end.nav == [whole.nav[-1]] and at_end.turnover == []


class _Reader(EqualWeightAgent):
    """Reads the market snapshot and reports diagnostics."""

    snapshot_lookback = 3

    def diagnostics(self) -> dict:
        return {"read": True}


def test_optional_abilities_are_asked_through_protocols(market, spec):
    plain, reader = BuyAndHoldAgent(), _Reader(name="reader")
    assert isinstance(plain, Resumable) and not isinstance(plain, Diagnosable | ReadsSnapshot)
    assert isinstance(reader, Diagnosable) and isinstance(reader, ReadsSnapshot)
    assert (snapshot_lookback(plain), agent_diagnostics(plain)) == (None, {})
    assert (snapshot_lookback(reader), agent_diagnostics(reader)) == (3, {"read": True})
    ensemble = make_ensemble("mean", [plain, reader])
    assert all(isinstance(ensemble, p) for p in (Composite, Resumable, Diagnosable))
    assert snapshot_lookback(ensemble) == 3  # what a member needs, the whole needs
    seen = []
    res = run_backtest(
        ensemble,
        spec,
        str(market.dates[50]),
        str(market.dates[60]),
        seed=0,
        on_step=lambda step, info: seen.append(info["snapshot"].dates),
    )
    assert all(len(dates) == 3 for dates in seen)
    assert res.diagnostics["members"] == ["buy_and_hold", "reader"]


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2018-13-45", "2019-01-01", "start"),  # not a date, not "after end"
        ("2019-1-5", "2019-01-10", "start"),
        ("2019-02-01", "2019-01-31", "empty date range: start 2019-02-01 is after end"),
    ],
)
def test_an_evaluation_checks_its_dates_as_dates(start, end, message):
    from marketarena.envs.errors import ConfigError
    from marketarena.evaluation.evaluate import EvaluationConfig

    with pytest.raises(ConfigError, match=message) as info:
        EvaluationConfig(agents=("equal_weight",), start=start, end=end).validate()
    if "empty" not in message:
        assert "after end" not in str(info.value)


def test_progress_counts_every_backtest_day_against_its_total(market, spec):
    """The count a progress bar shows: 0 of N as each backtest starts, then every step, ending
    at N of N, where N is the number of steps the backtest really took."""
    calls: list[tuple[str, int, int, int]] = []
    start, end = str(market.dates[50]), str(market.dates[80])
    hook_steps: list[int] = []
    res = run_backtest(
        RandomAgent(),
        spec,
        start,
        end,
        seed=0,
        on_step=lambda step, info: hook_steps.append(step),
        progress=lambda step, total: calls.append(("", 0, step, total)),
    )
    steps = len(res.nav) - 1
    assert [c[2:] for c in calls] == [(s, steps) for s in range(steps + 1)]
    assert hook_steps == list(range(1, steps + 1))  # the step hook still runs alongside

    calls.clear()
    evaluate_agents(
        [BuyAndHoldAgent(), RandomAgent()],
        spec,
        start,
        end,
        seeds=[0, 1],
        progress=lambda *args: calls.append(args),
    )
    starts = [(agent, seed) for agent, seed, step, _ in calls if step == 0]
    assert starts == [("buy_and_hold", 0), ("buy_and_hold", 1), ("random", 0), ("random", 1)]
    for agent, seed in starts:
        mine = [(step, total) for a, s, step, total in calls if (a, s) == (agent, seed)]
        assert mine == [(s, steps) for s in range(steps + 1)]
