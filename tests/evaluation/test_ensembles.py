"""Ensembles pinned on hand-computed weights; protocol, seeding, full backtests, no look-ahead."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from marketarena.agents import Agent, EqualWeightAgent, RandomAgent
from marketarena.envs import ConfigError, MarketData, PortfolioEnv
from marketarena.envs.synthetic import gbm_market
from marketarena.evaluation.ensembles import (
    ENSEMBLE_KINDS,
    ConfidenceWeightedEnsemble,
    PerformanceWeightedEnsemble,
    SelectionEnsemble,
    VotingEnsemble,
    WeightedAverageEnsemble,
    make_ensemble,
)
from marketarena.evaluation.evaluate import EvaluationConfig
from marketarena.evaluation.runner import run_backtest

FREE = {"commission_bps": 0.0, "slippage_bps": 0.0}
OBS = np.zeros(1, dtype=np.float32)


class FixedAgent:
    """Returns the same weights every step (or the next of a list per step), optionally with a
    confidence; records its resets and counts its calls."""

    def __init__(
        self,
        weights: Sequence[float] | Sequence[Sequence[float]],
        name: str = "fixed",
        confidence: float | None = None,
    ) -> None:
        self.name = name
        w = np.asarray(weights, dtype=float)
        self._script = w if w.ndim == 2 else w[None, :]
        self.confidence = confidence
        self.seeds: list[int | None] = []
        self.calls = 0

    def reset(self, *, seed: int | None = None) -> None:
        self.seeds.append(seed)
        self.calls = 0

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        w = self._script[min(self.calls, len(self._script) - 1)]
        self.calls += 1
        return w.copy()


class ChaseAgent:
    """All in the asset that rose most since its previous call (cash on the first call): its
    actions depend on the prices it has seen."""

    name = "chase"

    def reset(self, *, seed: int | None = None) -> None:
        self._prev: np.ndarray | None = None

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        prices = np.asarray(info["prices"])
        out = np.zeros(len(prices) + 1)
        if self._prev is None:
            out[-1] = 1.0
        else:
            out[int(np.argmax(prices / self._prev))] = 1.0
        self._prev = prices
        return out


def info_at(market: MarketData, t: int) -> dict[str, Any]:
    cash = np.zeros(market.n_assets + 1)
    cash[-1] = 1.0
    return {"date": market.dates[t], "weights": cash, "prices": market.close[t].copy()}


def drive(ensemble: Any, market: MarketData) -> np.ndarray:
    """The ensemble's action at every bar of ``market`` (after a reset)."""
    ensemble.reset(seed=0)
    return np.array([ensemble.act(OBS, info_at(market, t)) for t in range(market.n_periods)])


def once(ensemble: Any, n_assets: int = 3) -> np.ndarray:
    ensemble.reset()
    info = {"weights": np.eye(n_assets + 1)[-1], "prices": np.full(n_assets, 100.0)}
    return ensemble.act(OBS, info)


def prices_from_returns(returns: list[list[float]]) -> np.ndarray:
    """Closes starting at 100 that realise ``returns`` (rows: periods, columns: assets)."""
    r = np.asarray(returns, dtype=float)
    return 100.0 * np.vstack([np.ones((1, r.shape[1])), np.cumprod(1.0 + r, axis=0)])


def hand_sharpe(returns: Sequence[float], periods_per_year: float) -> float:
    r = np.asarray(returns, dtype=float)
    return float(r.mean() / r.std(ddof=1) * math.sqrt(periods_per_year))


# A: half in assets 0 and 1; B: assets 1 and 2 unnormalised; C: negative only -> all cash.
A, B, C = [0.5, 0.5, 0.0, 0.0], [0.0, 2.0, 2.0, 0.0], [-1.0, 0.0, 0.0, 0.0]


# ------------------------------------------------------------------ weighted average
def test_weighted_average_hand_computed():
    members = [FixedAgent(A, "a"), FixedAgent(B, "b"), FixedAgent(C, "c")]
    # normalised: A, [0, .5, .5, 0], cash; weights 2:1:1 -> .5, .25, .25
    ens = WeightedAverageEnsemble(members, weights=[2, 1, 1])
    np.testing.assert_allclose(once(ens), [0.25, 0.375, 0.125, 0.25])
    assert ens.diagnostics()["member_weights"] == [0.5, 0.25, 0.25]
    equal = WeightedAverageEnsemble(members)
    np.testing.assert_allclose(once(equal), [1 / 6, 1 / 3, 1 / 6, 1 / 3])


# ------------------------------------------------------------- confidence weighted
def test_confidence_weighted_hand_computed_and_read_every_step():
    a = FixedAgent([1, 0, 0, 0], "a", confidence=0.8)
    b = FixedAgent([0, 1, 0, 0], "b", confidence=0.2)
    c = FixedAgent([0, 0, 0, 1], "c")  # no confidence: counts as 1.0
    ens = ConfidenceWeightedEnsemble([a, b, c])
    np.testing.assert_allclose(once(ens), [0.4, 0.1, 0.0, 0.5])
    np.testing.assert_allclose(ens.diagnostics()["confidences"], [0.8, 0.2, 1.0])

    a.confidence = 0.0
    np.testing.assert_allclose(once(ens), [0.0, 0.2 / 1.2, 0.0, 1.0 / 1.2])
    a.confidence = b.confidence = 0.0
    c.confidence = 0.0  # nobody is confident: members count equally
    np.testing.assert_allclose(once(ens), [1 / 3, 1 / 3, 0.0, 1 / 3])


@pytest.mark.parametrize("bad", [float("nan"), 1.5, -0.1, "high"])
def test_confidence_invalid_names_the_member(bad):
    ens = ConfidenceWeightedEnsemble([FixedAgent(A, "good"), FixedAgent(B, "shaky", bad)])
    with pytest.raises(ValueError, match=r"'shaky'.*confidence"):
        once(ens)


# ------------------------------------------------------------------------- voting
# votes: V1 -> {0, 1}; V2 -> {0, 2}; V3 -> {1} (the 1e-9 is below the threshold)
V1, V2, V3 = [0.6, 0.4, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0], [0.0, 0.3, 1e-9, 0.7]


def voters() -> list[FixedAgent]:
    return [FixedAgent(V1, "v1"), FixedAgent(V2, "v2"), FixedAgent(V3, "v3")]


def test_majority_vote_hand_computed():
    ens = VotingEnsemble(voters(), method="majority")
    # counts per asset: 2, 2, 1 out of 3 -> hold assets 0 and 1
    np.testing.assert_allclose(once(ens), [0.5, 0.5, 0.0, 0.0])
    assert ens.diagnostics()["held"] == [0, 1]
    # two members disagreeing: each asset has exactly half the votes -> not held, all cash
    tie = VotingEnsemble([FixedAgent([1, 0, 0, 0], "x"), FixedAgent([0, 1, 0, 0], "y")])
    np.testing.assert_allclose(once(tie), [0.0, 0.0, 0.0, 1.0])


def test_weighted_vote_hand_computed_and_ties():
    ens = VotingEnsemble(voters(), method="weighted", member_weights=[0.2, 0.2, 0.6])
    # support: asset 0 = .4, asset 1 = .2 + .6 = .8, asset 2 = .2 -> hold asset 1 only
    np.testing.assert_allclose(once(ens), [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(ens.diagnostics()["support"], [0.4, 0.8, 0.2])
    # weights 1:1:2 put asset 0 at exactly half: a tie is not held
    tie = VotingEnsemble(voters(), method="weighted", member_weights=[1, 1, 2])
    np.testing.assert_allclose(once(tie), [0.0, 1.0, 0.0, 0.0])
    # 0.07 + 0.62 = 0.69 on paper; normalised in floating point the sum is 0.5000000000000001,
    # still a tie for the rules
    fuzzy = VotingEnsemble(
        [FixedAgent([1, 0, 0, 0], "x"), FixedAgent([1, 0, 0, 0], "y"), FixedAgent(V3, "z")],
        method="weighted",
        member_weights=[0.07, 0.62, 0.69],
    )
    np.testing.assert_allclose(once(fuzzy), [0.0, 0.0, 0.0, 1.0])


def test_rank_vote_borda_hand_computed():
    # Borda points (0 = lowest): V1 [2, 1, 0]; V2 ties assets 0, 2 -> [1.5, 0, 1.5];
    # V3 [0.5, 2, 0.5] (1e-9 is below the threshold: no position) -> totals [4, 3, 2]
    ens = VotingEnsemble(voters(), method="rank")
    np.testing.assert_allclose(once(ens), [1.0, 0.0, 0.0, 0.0])  # top_k = 3 // 2 = 1
    np.testing.assert_allclose(ens.diagnostics()["scores"], [4.0, 3.0, 2.0])
    top2 = VotingEnsemble(voters(), method="rank", top_k=2)
    np.testing.assert_allclose(once(top2), [0.5, 0.5, 0.0, 0.0])
    # weights .2/.2/.6, scaled to average 1 -> .6, .6, 1.8: totals [3.0, 4.2, 1.8]
    weighted = VotingEnsemble(voters(), method="rank", member_weights=[0.2, 0.2, 0.6])
    np.testing.assert_allclose(once(weighted), [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(weighted.diagnostics()["scores"], [3.0, 4.2, 1.8])


def test_rank_vote_tie_rules():
    # a tie at the cut goes to the lower asset index
    tied = VotingEnsemble([FixedAgent([0.5, 0.5, 0, 0], "x")], method="rank", top_k=1)
    np.testing.assert_allclose(once(tied), [1.0, 0.0, 0.0, 0.0])
    # assets nobody votes for are never held: all-cash members keep the ensemble in cash
    cash = VotingEnsemble([FixedAgent([0, 0, 0, 1], "x"), FixedAgent(C, "y")], method="rank")
    np.testing.assert_allclose(once(cash), [0.0, 0.0, 0.0, 1.0])
    # only asset 2 has a vote, so top_k=2 holds just it
    one = VotingEnsemble([FixedAgent([0, 0, 1, 0], "x")], method="rank", top_k=2)
    np.testing.assert_allclose(once(one), [0.0, 0.0, 1.0, 0.0])


# ------------------------------------------------------------- performance weighted
# Asset 0 rises with noise, asset 1 falls, asset 2 is flat; the last period reverses.
PERF_RETURNS = [
    [0.02, -0.01, 0.0],
    [0.01, 0.01, 0.0],
    [0.03, -0.02, 0.0],
    [-0.05, 0.04, 0.0],
]


def test_performance_weighted_hand_computed(make_market):
    market = make_market(prices_from_returns(PERF_RETURNS))
    up = FixedAgent([1, 0, 0, 0], "up")
    down = FixedAgent([0, 1, 0, 0], "down")
    cash = FixedAgent([0, 0, 0, 1], "cash")  # zero-variance shadow returns score 0
    ens = PerformanceWeightedEnsemble(
        [up, down, cash], window=3, min_periods=3, temperature=2.0, periods_per_year=1
    )
    actions = drive(ens, market)
    # steps 0-2 have 0, 1, 2 shadow returns: equal weights
    np.testing.assert_allclose(actions[:3], np.tile([1 / 3, 1 / 3, 0, 1 / 3], (3, 1)))
    # step 3: returns up [.02, .01, .03], down [-.01, .01, -.02]
    s = np.array([hand_sharpe([0.02, 0.01, 0.03], 1), hand_sharpe([-0.01, 0.01, -0.02], 1), 0])
    w = np.exp(s / 2.0) / np.exp(s / 2.0).sum()
    np.testing.assert_allclose(actions[3], [w[0], w[1], 0.0, w[2]])
    assert w[0] > 0.5 > w[1]  # weight shifted toward the better member
    # step 4: the window rolls (the first period drops out) and the reversal is scored
    s = np.array([hand_sharpe([0.01, 0.03, -0.05], 1), hand_sharpe([0.01, -0.02, 0.04], 1), 0])
    w = np.exp(s / 2.0) / np.exp(s / 2.0).sum()
    np.testing.assert_allclose(actions[4], [w[0], w[1], 0.0, w[2]])
    assert w[1] > w[0]
    diag = ens.diagnostics()
    assert diag["n_returns"] == 3
    np.testing.assert_allclose(diag["sharpe"], s)


def test_performance_weighted_favours_the_better_member_in_a_backtest():
    data = gbm_market(n_assets=3, n_periods=160, seed=5, mu=[0.9, -0.9, 0.0], sigma=0.15)
    env = PortfolioEnv(data, window=5, episode_length=120, random_start=False, rules=FREE)
    members = [FixedAgent([0, 1, 0, 0], "loser"), FixedAgent([1, 0, 0, 0], "winner")]
    ens = PerformanceWeightedEnsemble(members, window=40, min_periods=10, temperature=0.5)
    result = run_backtest(ens, env, seed=0)
    w = ens.diagnostics()["member_weights"]
    assert w[1] > 0.9 > 0.1 > w[0]
    assert result.weights[-1][0] > 0.9  # the portfolio sits mostly in the winner's asset


# ----------------------------------------------------------------------- selection
def test_selection_follows_the_better_member_and_switches_after_reversal(make_market):
    fall = [[-0.01, 0.01, 0.0], [-0.02, 0.02, 0.0], [-0.01, 0.01, 0.0], [-0.03, 0.03, 0.0]]
    rise = [[0.01, -0.01, 0.0], [0.03, -0.02, 0.0], [0.01, -0.01, 0.0], [0.02, -0.03, 0.0]]
    market = make_market(prices_from_returns(fall + rise))  # 9 bars: steps 0..8
    a = FixedAgent([1, 0, 0, 0], "holds_0")
    b = FixedAgent([0, 1, 0, 0], "holds_1")
    ens = SelectionEnsemble([a, b], rebalance_every=4, validation_window=4)
    actions = drive(ens, market)
    assert a.calls == b.calls == 9  # every member acts every step
    # steps 0-3: no full validation window yet -> the first member
    np.testing.assert_array_equal(actions[:4], np.tile([1.0, 0, 0, 0], (4, 1)))
    # step 4: over periods 0..3 asset 1 rose -> follow b, through step 7 even though the
    # trend has already reversed (no reselection between rebalances)
    np.testing.assert_array_equal(actions[4:8], np.tile([0, 1.0, 0, 0], (4, 1)))
    # step 8: over periods 4..7 asset 0 rose -> back to a
    np.testing.assert_array_equal(actions[8], [1.0, 0, 0, 0])
    assert ens.selected == 0
    history = ens.history
    assert [(h.step, h.member) for h in history] == [(0, "holds_0"), (4, "holds_1"), (8, "holds_0")]
    assert [h.date for h in history] == [str(market.dates[t]) for t in (0, 4, 8)]
    assert math.isnan(history[0].sharpe)
    assert history[1].sharpe == pytest.approx(hand_sharpe([0.01, 0.02, 0.01, 0.03], 252))
    assert history[2].sharpe == pytest.approx(hand_sharpe([0.01, 0.03, 0.01, 0.02], 252))
    diag = ens.diagnostics()
    assert diag["member"] == "holds_0" and len(diag["history"]) == 3
    np.testing.assert_allclose(
        diag["sharpe"], [history[2].sharpe, hand_sharpe([-0.01, -0.02, -0.01, -0.03], 252)]
    )


def test_selection_annualises_with_periods_per_year(make_market):
    returns = [[0.01, 0.0, 0.0], [0.03, 0.0, 0.0], [0.02, 0.0, 0.0]]
    market = make_market(prices_from_returns(returns))
    ens = SelectionEnsemble(
        [FixedAgent([1, 0, 0, 0], "x")],
        rebalance_every=3,
        validation_window=3,
        periods_per_year=12,
    )
    drive(ens, market)
    assert ens.history[-1].sharpe == pytest.approx(hand_sharpe([0.01, 0.03, 0.02], 12))


# -------------------------------------------------------------- protocol and seeding
#: every kind, built as the evaluation builds them: through the factory
ENSEMBLES: dict[str, Callable[[Sequence[Agent]], Any]] = {
    "mean": lambda m: make_ensemble("mean", m, weights=[1, 2, 1]),
    "confidence": lambda m: make_ensemble("confidence", m),
    # random Dirichlet members put about 0.2 on each asset: a 0.2 threshold makes votes vary
    "majority": lambda m: make_ensemble("majority", m, threshold=0.2),
    "weighted_vote": lambda m: make_ensemble(
        "weighted_vote", m, member_weights=[3, 1, 1], threshold=0.2
    ),
    "rank": lambda m: make_ensemble("rank", m, top_k=2),
    "performance": lambda m: make_ensemble("performance", m, window=20, min_periods=5),
    "selection": lambda m: make_ensemble("selection", m, rebalance_every=10, validation_window=10),
}


def test_every_kind_is_tested():
    assert list(ENSEMBLES) == list(ENSEMBLE_KINDS)


@pytest.mark.parametrize(
    ("kind", "cls", "method"),
    [
        ("mean", WeightedAverageEnsemble, None),
        ("confidence", ConfidenceWeightedEnsemble, None),
        ("majority", VotingEnsemble, "majority"),
        ("weighted_vote", VotingEnsemble, "weighted"),
        ("rank", VotingEnsemble, "rank"),
        ("performance", PerformanceWeightedEnsemble, None),
        ("selection", SelectionEnsemble, None),
    ],
)
def test_the_factory_builds_each_kind_named_for_it(kind, cls, method):
    members = [FixedAgent(A, "a"), FixedAgent(B, "b")]
    ens = make_ensemble(kind, members)
    assert type(ens) is cls and ens.name == f"ensemble:{kind}" and ens.members == tuple(members)
    assert getattr(ens, "method", None) == method
    assert make_ensemble(kind, members, name="mine").name == "mine"


def test_the_factory_names_the_valid_kinds_and_options():
    members = [FixedAgent(A, "a"), FixedAgent(B, "b")]
    kinds = r"\['mean', 'confidence', 'majority', 'weighted_vote', 'rank', 'performance', "
    with pytest.raises(
        ConfigError, match=rf"unknown ensemble kind 'plurality'; the kinds are: {kinds}"
    ):
        make_ensemble("plurality", members)
    options = r"ensemble 'mean': unknown option\(s\) \['top_k'\]; it takes \['weights'\]"
    with pytest.raises(ValueError, match=options):  # a ConfigError is a ValueError
        make_ensemble("mean", members, top_k=1)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['method'\]"):  # the kind fixes it
        make_ensemble("rank", members, method="majority")
    # the kind's own checks still apply
    with pytest.raises(ConfigError, match="top_k"):
        make_ensemble("rank", members, top_k=0)
    # the evaluation offers the same kinds, and names them when one is wrong
    with pytest.raises(
        ConfigError, match=rf"unknown ensemble\(s\) \['vote'\]; the kinds are: {kinds}"
    ):
        EvaluationConfig(agents=("a", "b"), ensembles=("vote",)).validate()


@pytest.fixture(scope="module")
def market() -> MarketData:
    return gbm_market(n_assets=4, n_periods=150, seed=7)


def make_env(data: MarketData) -> PortfolioEnv:
    return PortfolioEnv(
        data,
        window=5,
        episode_length=60,
        random_start=False,
        rules={"commission_bps": 5.0, "slippage_bps": 5.0},
    )


def random_members() -> list[Agent]:
    return [RandomAgent(name=f"random_{k}") for k in range(3)]


@pytest.mark.parametrize("kind", ENSEMBLES)
def test_follows_the_agent_protocol_and_propagates_seeds(kind):
    members = [FixedAgent(A, "a"), FixedAgent(B, "b"), FixedAgent(C, "c")]
    ens = ENSEMBLES[kind](members)
    assert isinstance(ens, Agent)
    ens.reset(seed=10)
    ens.reset()
    assert [m.seeds for m in members] == [[10, None], [11, None], [12, None]]


@pytest.mark.parametrize("kind", ENSEMBLES)
def test_same_seed_same_backtest_different_seed_different(market, kind):
    def nav(seed: int) -> np.ndarray:
        return run_backtest(ENSEMBLES[kind](random_members()), make_env(market), seed=seed).nav

    first, again, other = nav(3), nav(3), nav(4)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


class Recorder:
    """Wraps an agent and keeps every action it returns."""

    def __init__(self, agent: Any) -> None:
        self.agent, self.name, self.actions = agent, agent.name, []

    def reset(self, *, seed: int | None = None) -> None:
        self.agent.reset(seed=seed)

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        action = self.agent.act(observation, info)
        self.actions.append(action)
        return action


@pytest.mark.parametrize("kind", ENSEMBLES)
def test_full_backtest_gives_valid_weights_every_step(market, kind):
    members = [RandomAgent(rebalance_every=5, name="random"), EqualWeightAgent(10), ChaseAgent()]
    agent = Recorder(ENSEMBLES[kind](members))
    result = run_backtest(agent, make_env(market), seed=0)
    actions = np.array(agent.actions)
    assert actions.shape == (60, market.n_assets + 1)
    assert np.all(actions >= 0)
    np.testing.assert_allclose(actions.sum(axis=1), 1.0, atol=1e-12)
    assert len(result.nav) == 61 and np.all(np.isfinite(result.nav))
    assert np.all(result.weights >= -1e-12)
    np.testing.assert_allclose(result.weights.sum(axis=1), 1.0, atol=1e-9)
    assert isinstance(agent.agent.diagnostics(), dict)


# -------------------------------------------------------------------- no look-ahead
@pytest.mark.parametrize(
    "build",
    [
        lambda m: PerformanceWeightedEnsemble(m, window=10, min_periods=3, temperature=0.5),
        lambda m: SelectionEnsemble(m, rebalance_every=3, validation_window=3),
    ],
    ids=["performance", "selection"],
)
def test_no_look_ahead_future_prices_change_no_action_up_to_t(market, build):
    steps = 30

    def run(data: MarketData) -> tuple[np.ndarray, int]:
        env = make_env(data)
        ens = build([ChaseAgent(), RandomAgent(name="random"), EqualWeightAgent(5)])
        observation, info = env.reset(seed=0)
        ens.reset(seed=0)
        actions = []
        for _ in range(steps):
            actions.append(ens.act(observation, info))
            observation, _, _, _, info = env.step(actions[-1])
        return np.array(actions), int(env.core.episode_start[0])

    actions, t0 = run(market)
    t = t0 + 20  # the decision at step 20 is made after the close of bar t
    rng = np.random.default_rng(1)
    future = rng.uniform(0.7, 1.3, size=(market.n_periods - t - 1, market.n_assets))

    def perturb(values: np.ndarray | None) -> np.ndarray | None:
        if values is None:
            return None
        out = values.copy()
        out[t + 1 :] *= future
        return out

    perturbed = MarketData(
        dates=market.dates,
        symbols=market.symbols,
        close=perturb(market.close),
        open=perturb(market.open),
        high=perturb(market.high),
        low=perturb(market.low),
        volume=perturb(market.volume),
    )
    actions2, _ = run(perturbed)
    np.testing.assert_array_equal(actions[:21], actions2[:21])
    assert not np.allclose(actions[21:], actions2[21:])  # the future does enter later


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda m: WeightedAverageEnsemble(m, weights=[1, 1]), ValueError, "one entry per"),
        (lambda m: WeightedAverageEnsemble(m, weights=[1, -1, 1]), ValueError, "non-negative"),
        (lambda m: WeightedAverageEnsemble(m, weights=[0, 0, 0]), ValueError, "all be zero"),
        (lambda m: WeightedAverageEnsemble(m, weights=[1, np.nan, 1]), ValueError, "finite"),
        (lambda m: WeightedAverageEnsemble([]), ValueError, "at least one member"),
        (lambda m: ConfidenceWeightedEnsemble([]), ValueError, "at least one member"),
        (lambda m: SelectionEnsemble([*m, object()]), TypeError, r"member 3.*not an Agent"),
        (lambda m: VotingEnsemble(m, method="plurality"), ValueError, "choose one of"),
        (lambda m: VotingEnsemble(m, member_weights=[1, 1, 1]), ValueError, "not 'majority'"),
        (lambda m: VotingEnsemble(m, method="weighted", top_k=1), ValueError, "top_k"),
        (lambda m: VotingEnsemble(m, method="rank", top_k=0), ValueError, "top_k"),
        (lambda m: VotingEnsemble(m, threshold=-1.0), ValueError, "threshold"),
        (lambda m: PerformanceWeightedEnsemble(m, temperature=0.0), ValueError, "temperature"),
        (lambda m: PerformanceWeightedEnsemble(m, window=3, min_periods=5), ValueError, "exceed"),
        (lambda m: PerformanceWeightedEnsemble(m, min_periods=1), ValueError, "min_periods"),
        (lambda m: SelectionEnsemble(m, rebalance_every=0), ValueError, "rebalance_every"),
        (lambda m: SelectionEnsemble(m, validation_window=1), ValueError, "validation_window"),
    ],
)
def test_invalid_settings_raise(build, error, match):
    members = [FixedAgent(A, "a"), FixedAgent(B, "b"), FixedAgent(C, "c")]
    with pytest.raises(error, match=match):
        build(members)


@pytest.mark.parametrize(
    ("bad", "match"), [([0.5, 0.5], "shape"), ([np.nan, 0, 0, 1], "non-finite")]
)
def test_invalid_member_output_names_the_member(bad, match):
    ens = WeightedAverageEnsemble([FixedAgent(A, "fine"), FixedAgent(bad, "broken")])
    with pytest.raises(ValueError, match=rf"'broken'.*{match}"):
        once(ens)


def test_rank_top_k_larger_than_the_universe_raises():
    ens = VotingEnsemble(voters(), method="rank", top_k=5)
    with pytest.raises(ValueError, match="top_k=5 exceeds the number of assets"):
        once(ens)
