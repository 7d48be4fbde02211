"""Arena tournaments: seats equal backtests, the schedule, TrueSkill against the library,
head-to-head counts by hand, LLM and SB3 agents taking part, determinism, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import trueskill

from marketarena.agents.registry import make_agent
from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.settings import EnvSettings
from marketarena.envs.synthetic import gbm_market
from marketarena.evaluation.arena import (
    Match,
    Tournament,
    head_to_head,
    ranks,
    rate,
    ratings_table,
    result_path,
    run_match,
    run_tournament,
    schedule,
)
from marketarena.evaluation.ensembles import make_ensemble
from marketarena.evaluation.runner import run_backtest

MARKET = gbm_market(n_assets=3, n_periods=80, seed=3)
SETTINGS = EnvSettings(window=5)


@pytest.fixture(scope="module")
def sb3_model(tmp_path_factory) -> str:
    """A tiny PPO trained on the test market with window 5 (a few seconds)."""
    from stable_baselines3 import PPO

    from marketarena.envs.portfolio_env import PortfolioEnv

    path = tmp_path_factory.mktemp("sb3") / "tiny.zip"
    env = PortfolioEnv(MARKET, window=5, episode_length=30)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=32,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [8]},
    )
    model.learn(32)
    model.save(path)
    return str(path)


@pytest.fixture
def llm_options(llm_server, weights_answer, monkeypatch) -> dict:
    """``llm:scripted`` answers 40% SYN0, 20% SYN2, 40% cash every time, from a real local
    server."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    llm_server.script(then=weights_answer({"SYN0": 0.4, "SYN2": 0.2, "CASH": 0.4}))
    return {
        "base_url": llm_server.base_url,
        "cache_path": None,
        "max_retries": 0,
        "timeout": 5.0,
        "lookback": 5,
    }


def _agent(spec: str, sb3_path: str, llm: dict):
    if spec == "ensemble":
        return make_ensemble("mean", [make_agent("equal_weight:5"), make_agent("random:3")])
    if spec == "sb3":
        return make_agent(sb3_path)
    return make_agent(spec, llm_options=llm)


@pytest.mark.parametrize(
    "spec",
    [
        "equal_weight:5",
        "random:3",
        "buy_and_hold",
        'rule:"rsi_14 < 50"',
        "sb3",
        "ensemble",
        "llm:scripted",
    ],
)
def test_one_seat_without_impact_is_the_backtest(spec, sb3_model, llm_options):
    """One seat, zero impact: the seat's NAV and weights are run_backtest's for the same agent
    (a separate PortfolioEnv run), step for step, for every agent kind."""
    seed = 4
    match = Match(0, ("2000-01-10", "2000-03-31"), seed, ("x",))
    seat = run_match([_agent(spec, sb3_model, llm_options)], MARKET, SETTINGS, match)
    alone = run_backtest(
        _agent(spec, sb3_model, llm_options),
        {"data": MARKET, "settings": SETTINGS},
        "2000-01-10",
        "2000-03-31",
        seed=seed,
    )
    (res,) = seat.results
    assert len(res.nav) == len(alone.nav) > 30
    np.testing.assert_array_equal(res.dates, alone.dates)
    np.testing.assert_array_equal(res.nav, alone.nav)
    np.testing.assert_array_equal(res.weights, alone.weights)
    np.testing.assert_array_equal(res.costs, alone.costs)
    assert res.nav[-1] != res.nav[0]  # the agent traded
    np.testing.assert_array_equal(seat.impact_costs[0], 0.0)


def test_the_llm_seat_is_prompted_with_its_own_book(llm_options, llm_server):
    """In a two-seat match the LLM's prompt holds its own NAV, not its opponent's."""
    llm = make_agent("llm:scripted", llm_options=llm_options)
    match = Match(0, ("2000-01-10", "2000-02-04"), 0, ("llm", "ew"))
    result = run_match([llm, make_agent("cash")], MARKET, SETTINGS, match, impact={"eta": 0.5})
    llm_res, cash_res = result.results
    assert cash_res.nav[-1] == cash_res.nav[0] == 10_000  # cash never trades
    last_prompt = json.dumps(llm_server.requests[-1].body)
    assert f"{llm_res.nav[-2]:,.2f}" in last_prompt or f"{llm_res.nav[-2]:.2f}" in last_prompt
    assert len(llm_server.requests) == len(llm_res.turnover)


def test_schedule_order():
    periods = [("2000-01-03", "2000-06-30"), ("2000-07-03", None)]
    got = [(m.index, m.period, m.seed, m.agents) for m in schedule("abc", periods, 2)]
    p0, p1 = periods
    assert got == [
        (0, p0, 0, ("a", "b")),
        (1, p0, 0, ("a", "c")),
        (2, p0, 0, ("b", "c")),
        (3, p0, 1, ("a", "b")),
        (4, p0, 1, ("a", "c")),
        (5, p0, 1, ("b", "c")),
        (6, p1, 0, ("a", "b")),
        (7, p1, 0, ("a", "c")),
        (8, p1, 0, ("b", "c")),
        (9, p1, 1, ("a", "b")),
        (10, p1, 1, ("a", "c")),
        (11, p1, 1, ("b", "c")),
    ]
    everyone = schedule("abc", periods[:1], 2, "all")
    assert [(m.seed, m.agents) for m in everyone] == [(0, ("a", "b", "c")), (1, ("a", "b", "c"))]


def _record(**returns: float) -> dict:
    return {"agents": list(returns), "return": returns, "rank": ranks(returns)}


# three hand-made matches: a beats b, b ties c, then a three-way match a > c > b
RECORDS = [
    _record(a=0.05, b=-0.01),
    _record(b=0.02, c=0.02),
    _record(a=0.01, b=-0.03, c=0.00),
]


def test_ranks_share_ties():
    assert ranks({"a": 0.1, "b": 0.3, "c": 0.1}) == {"b": 0, "a": 1, "c": 1}
    assert ranks({"a": math.nan, "b": -0.5}) == {"b": 0, "a": 1}


def test_head_to_head_counts_by_hand():
    rows = {(r["agent"], r["opponent"]): r for r in head_to_head(RECORDS, ["a", "b", "c"])}
    # a-b: matches 1 and 3, a ahead in both by 0.06 and 0.04
    ab = rows["a", "b"]
    assert (ab["matches"], ab["wins"], ab["draws"], ab["losses"]) == (2, 2, 0, 0)
    assert ab["mean_return_difference"] == pytest.approx(0.05)
    # a-c: match 3 only, a ahead by 0.01
    ac = rows["a", "c"]
    assert (ac["matches"], ac["wins"], ac["draws"], ac["losses"]) == (1, 1, 0, 0)
    # b-c: a draw in match 2, a loss (-0.03 vs 0.00) in match 3
    bc = rows["b", "c"]
    assert (bc["matches"], bc["wins"], bc["draws"], bc["losses"]) == (2, 0, 1, 1)
    assert bc["mean_return_difference"] == pytest.approx(-0.015)


def test_trueskill_against_the_library():
    """The ratings are what trueskill's own rate() gives for the same ranks in order."""
    expected = {name: trueskill.Rating() for name in "abc"}
    for ranked in ({"a": 0, "b": 1}, {"b": 0, "c": 0}, {"a": 0, "c": 1, "b": 2}):
        names = list(ranked)
        new = trueskill.rate([(expected[n],) for n in names], ranks=[ranked[n] for n in names])
        expected.update({n: r for n, (r,) in zip(names, new, strict=True)})
    got = rate(RECORDS, ["a", "b", "c"])
    for name in "abc":
        assert got[name].mu == pytest.approx(expected[name].mu, abs=1e-12)
        assert got[name].sigma == pytest.approx(expected[name].sigma, abs=1e-12)
    assert got["a"].mu > got["c"].mu > got["b"].mu
    table = ratings_table(RECORDS, ["a", "b", "c"], resamples=200)
    assert [r["agent"] for r in table] == ["a", "c", "b"]  # by mu - 3 sigma
    a = table[0]
    assert a["conservative"] == pytest.approx(a["mu"] - 3 * a["sigma"])
    assert (a["wins"], a["draws"], a["losses"]) == (2, 0, 0)
    c = next(r for r in table if r["agent"] == "c")
    assert (c["wins"], c["draws"], c["losses"]) == (0, 1, 1)
    assert a["mean_return_ci_low"] <= a["mean_return"] == pytest.approx(0.03)
    assert a["mean_return"] <= a["mean_return_ci_high"]


def _tournament(**kwargs) -> Tournament:
    base = {
        "agents": ("equal_weight:5", "random:3", "buy_and_hold"),
        "data": MARKET,
        "periods": (("2000-01-10", "2000-02-25"), ("2000-03-01", None)),
        "seeds": 2,
        "impact": {"eta": 0.5, "gamma": 0.2, "noise_scale": 0.01},
        "window": 5,
        "bootstrap_resamples": 200,
    }
    return Tournament(**{**base, **kwargs})


def _files(folder) -> dict[str, bytes]:
    """Every output file, minus timings: elapsed_s of each match line, and report.html,
    whose plotly figures carry random element ids."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name == "report.html":
            continue
        data = path.read_bytes()
        if path.name == "matches.jsonl":
            lines = [json.loads(line) for line in data.decode().splitlines()]
            data = json.dumps([{k: v for k, v in r.items() if k != "elapsed_s"} for r in lines])
            data = data.encode()
        out[str(path.relative_to(folder))] = data
    return out


def test_a_tournament_writes_its_folder_and_is_deterministic(tmp_path):
    config = _tournament()
    result = run_tournament(config, tmp_path / "one")
    out = result.output
    lines = [json.loads(x) for x in (out / "matches.jsonl").read_text().splitlines()]
    assert [r["match"] for r in lines] == list(range(12))  # 2 periods x 2 seeds x 3 pairs
    for record in lines:
        assert record["rank"] == ranks(record["return"])
        for name in record["agents"]:
            path = result_path(out, record["match"], config.agents, name)
            res = json.loads(path.read_text())
            nav = res["daily"]["nav"]
            assert record["return"][name] == nav[-1] / nav[0] - 1
    # impact moved the fills (a cost, or a gain when trading against the others' flow)
    assert all(r["impact_cost"][n] != 0 for r in lines for n in r["agents"])
    # seeds differ (the random agent, the noise traders); the same pair and period
    assert lines[0]["return"] != lines[3]["return"]
    ratings = pd.read_csv(out / "ratings.csv")
    expected = {name: trueskill.Rating() for name in config.agents}
    for record in lines:  # independent: ranks by hand from the returns, then trueskill
        names = record["agents"]
        rets = [record["return"][n] for n in names]
        by_hand = [sum(o > r for o in rets) for r in rets]
        new = trueskill.rate([(expected[n],) for n in names], ranks=by_hand)
        expected.update({n: r for n, (r,) in zip(names, new, strict=True)})
    for row in ratings.itertuples():
        assert row.mu == pytest.approx(expected[row.agent].mu)
        assert row.sigma == pytest.approx(expected[row.agent].sigma)
        assert row.matches == 8
    h2h = pd.read_csv(out / "head_to_head.csv")
    assert list(h2h["matches"]) == [4, 4, 4]
    metrics = pd.read_csv(out / "agents" / "metrics.csv")
    assert set(metrics["agent"]) == set(config.agents)
    settings = json.loads((out / "tournament.json").read_text())
    assert settings["impact"]["eta"] == 0.5 and settings["data"]["sha256"]
    assert settings["periods"][1]["last_date"] == str(MARKET.dates[-1])
    again = run_tournament(config, tmp_path / "two")
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert again.skipped == 0
    # a finished tournament run again plays nothing and rewrites the same files
    rerun = run_tournament(config, tmp_path / "one")
    assert rerun.skipped == 12
    assert _files(tmp_path / "one") == _files(tmp_path / "two")


def test_llm_sb3_and_an_ensemble_take_part(tmp_path, sb3_model, llm_options, llm_server):
    config = _tournament(
        agents=("llm:scripted", sb3_model, "equal_weight:5"),
        ensembles=("mean",),
        periods=(("2000-01-10", "2000-02-11"),),
        seeds=1,
        format="all",
        llm=llm_options,
    )
    result = run_tournament(config, tmp_path / "mixed")
    (record,) = result.records
    assert record["agents"] == ["llm:scripted", "ppo:tiny", "equal_weight:5", "ensemble:mean"]
    assert {r["agent"] for r in result.ratings} == set(record["agents"])
    assert all(r["matches"] == 1 for r in result.ratings)
    # the LLM and the ensemble's LLM member each asked once per decision
    assert len(llm_server.requests) == 2 * 24
    # the llm's seat held what it was told: 40% SYN0, 20% SYN2 (drifting between decisions)
    llm_daily = pd.read_csv(tmp_path / "mixed" / "agents" / "daily_llm_scripted.csv")
    assert llm_daily["w_SYN0"].iloc[1] == pytest.approx(0.4, abs=0.02)
    assert llm_daily["w_SYN1"].iloc[1:].max() == 0


def test_another_tournament_in_the_folder_is_refused(tmp_path):
    run_tournament(_tournament(seeds=1, periods=(("2000-01-10", "2000-01-31"),)), tmp_path)
    with pytest.raises(ConfigError, match=r"another tournament \(impact: .*seeds: \[0, 1\] here"):
        run_tournament(
            _tournament(seeds=2, periods=(("2000-01-10", "2000-01-31"),), impact={}), tmp_path
        )
    with pytest.raises(ConfigError, match="holds no tournament"):
        run_tournament(_tournament(), tmp_path / "empty", resume=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"agents": ("equal_weight:5",)}, "the arena needs at least two agents, got 1"),
        ({"impact": {"eta": -0.1}}, "impact.eta must be a finite number >= 0, got -0.1"),
        ({"impact": {"speed": 1}}, "unknown impact setting"),
        ({"agents": ("equal_weight:5", "nobody")}, "unknown agent 'nobody'"),
        ({"periods": (("2000-03-01", "2000-01-10"),)}, "empty period 2000-03-01:2000-01-10"),
        ({"periods": (("2000-01-03", "2000-01-05"),)}, "period 2000-01-03:2000-01-05: "),
        ({"format": "league"}, "format='league': choose one of"),
    ],
)
def test_bad_input_is_refused(tmp_path, change, message):
    with pytest.raises((ConfigError, DataError), match=message):
        run_tournament(_tournament(**change), tmp_path)
    assert not (tmp_path / "matches.jsonl").exists()


class _Spy:
    """Equal weight; keeps what it was shown at every decision (a 3-bar snapshot too)."""

    name = "spy"
    snapshot_lookback = 3

    def __init__(self) -> None:
        self.seen: list[tuple] = []
        self.snapshots: list = []

    def reset(self, *, seed=None) -> None:
        self.seen, self.snapshots = [], []

    def act(self, observation, info):
        self.seen.append((observation.copy(), info["nav"], info["prices"].copy(), info["date"]))
        self.snapshots.append(info["snapshot"])
        return np.r_[np.full(3, 0.25), 0.25]


class _Switcher:
    """Equal weight until decision ``k``, then ``then`` for good."""

    name = "switcher"

    def __init__(self, k: int, then: np.ndarray) -> None:
        self.k, self.then, self.step = k, then, 0

    def reset(self, *, seed=None) -> None:
        self.step = 0

    def act(self, observation, info):
        self.step += 1
        return self.then if self.step > self.k else np.r_[np.full(3, 0.25), 0.25]


def test_a_seat_never_sees_the_others_current_decision():
    """Two opponents that differ only from decision k on: the spy's observations and infos
    are identical up to and including decision k (the opponent's decision at k is unseen),
    and differ after it (its flow moved prices)."""
    k = 10
    spies = []
    for then in (np.array([1.0, 0, 0, 0]), np.array([0, 0, 0, 1.0])):
        spy = _Spy()
        match = Match(0, ("2000-01-10", "2000-03-31"), 0, ("spy", "switcher"))
        run_match([spy, _Switcher(k, then)], MARKET, SETTINGS, match, impact={"gamma": 2.0})
        spies.append(spy.seen)
        # the snapshot's closes are the public prices the spy was shown, bar by bar, and
        # the historical ones before the match; its book is its own
        prices = [seen[2] for seen in spy.seen]
        for t, snap in enumerate(spy.snapshots[2:], start=2):
            np.testing.assert_array_equal(snap.close, np.vstack(prices[t - 2 : t + 1]))
            assert snap.nav == spy.seen[t][1]
        first_row = MARKET.dates.tolist().index(spy.seen[0][3])
        np.testing.assert_array_equal(
            spy.snapshots[0].close[:2], MARKET.close[first_row - 2 : first_row]
        )
        assert not np.array_equal(prices[-1], MARKET.close[first_row + len(prices) - 1])
    first, second = spies
    for a, b in zip(first[: k + 1], second[: k + 1], strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:2] == b[1:2] and a[3] == b[3]
        np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(first[k + 1][2], second[k + 1][2])  # public prices moved
    obs_dim = len(first[0][0])
    assert obs_dim == 5 * 3 * len(SETTINGS.features) + 3 + 1  # PortfolioEnv's shape
