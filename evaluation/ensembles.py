"""Ensembles: agents made of agents, each one itself an :class:`~marketarena.agents.Agent`.

* :class:`WeightedAverageEnsemble` — fixed weighted average of the members' target weights.
* :class:`ConfidenceWeightedEnsemble` — the average weighted by each member's ``confidence``.
* :class:`VotingEnsemble` — majority, weighted or rank (Borda) voting over per-asset signals.
* :class:`PerformanceWeightedEnsemble` — softmax of each member's recent Sharpe ratio.
* :class:`SelectionEnsemble` — the FinRL ensemble strategy: follow the member with the best
  validation Sharpe, re-chosen on a schedule.

:func:`make_ensemble` builds any of them by kind (:data:`ENSEMBLE_KINDS`): ``"mean"``,
``"confidence"``, ``"majority"``, ``"weighted_vote"``, ``"rank"``, ``"performance"``,
``"selection"``; it is how the evaluation (``marketarena evaluate --ensemble``) builds them.

They live in ``evaluation/`` rather than ``agents/`` because the adaptive ones score their
members with the evaluation metrics (:func:`~marketarena.evaluation.metrics.sharpe_ratio`),
and imports flow ``envs -> agents -> evaluation``, never back.

Shared contract:

* **Members.** Every step, every member's ``act(observation, info)`` is called with the
  ensemble's observation and info, whether or not its answer is used, so each member keeps its
  own state (schedules, rolling windows, caches) up to date. ``info["weights"]`` is the
  *ensemble's* portfolio: a member that returns it ("hold") votes to keep the ensemble's
  current weights.
* **Reading a member's answer.** Target weights ``(N + 1,)``, assets then cash, read with
  :class:`~marketarena.envs.PortfolioEnv`'s ``"normalize"`` mapping: negatives count as 0, the
  rest is divided by its sum, and an all-zero answer means all cash. A wrong shape or a
  non-finite entry raises ``ValueError`` naming the member.
* **The ensemble's answer** is always valid target weights: non-negative, summing to 1, length
  ``N + 1``. It is meant for the env's default ``"normalize"`` mapping, under which it is
  taken as it is (the ``"softmax"`` mapping would transform it again).
* ``reset(seed=s)`` resets member ``k`` with ``seed=s + k`` (``None`` stays ``None``) and clears
  the ensemble's own state.
* ``diagnostics()`` returns a dict of plain Python values (JSON-ready) describing the latest
  decision, for the runner to record; ``member_targets`` holds the members' normalised targets
  ``(K, N + 1)`` of the latest step.

No look-ahead: the adaptive ensembles score member ``k`` by its *shadow return* for the period
that has just ended, ``sum_i w_{k,i}(t-1) * (p_i(t) / p_i(t-1) - 1)`` (cash earns 0), from its
normalised targets at ``t - 1`` and ``info["prices"]`` (closes of bar ``t``, known when deciding
at ``t``). Shadow returns are close-to-close and cost-free: they ignore commissions, slippage
and the next-open fill. That is acceptable for *weighting* members because the omitted terms
are small next to return differences between members, and they hit members alike when
turnover is similar; it is not a substitute for each member's own backtest (use
:func:`~marketarena.evaluation.runner.run_backtest` for that).
"""

from __future__ import annotations

import copy
import inspect
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from marketarena.agents.base import Agent, Confident, Resumable
from marketarena.envs.errors import ConfigError
from marketarena.evaluation.metrics import PERIODS_PER_YEAR, sharpe_ratio

VotingMethod = Literal["majority", "weighted", "rank"]
VOTING_METHODS: tuple[str, ...] = ("majority", "weighted", "rank")

# Relative tolerance for "more than half" of a float total, so that an exact tie computed
# with rounding error still counts as a tie.
_TIE_TOLERANCE = 1e-12


def normalize_target(action: Any, size: int, who: str = "action") -> np.ndarray:
    """Target weights ``(size,)`` under the env's ``"normalize"`` mapping.

    Negatives count as 0, the rest is divided by its sum; an all-zero action is all cash (the
    last entry). Raises ``ValueError`` naming ``who`` for a wrong shape or non-finite entries.
    """
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (size,):
        raise ValueError(
            f"{who} returned weights of shape {a.shape}; expected ({size},): one per asset "
            f"({size - 1}), then cash"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{who} returned non-finite weights {a.tolist()}")
    a = np.maximum(a, 0.0)
    total = a.sum()
    if total <= 0.0:
        cash = np.zeros(size)
        cash[-1] = 1.0
        return cash
    return a / total


def _member_weights(weights: Sequence[float] | np.ndarray, n_members: int, what: str) -> np.ndarray:
    """Validate non-negative weights, one per member, not all zero; return them summing to 1."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_members,):
        raise ConfigError(
            f"{what} must have one entry per member ({n_members}), got shape {w.shape}"
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ConfigError(f"{what} must be finite and non-negative, got {w.tolist()}")
    if w.sum() <= 0:
        raise ConfigError(f"{what} must not all be zero")
    return w / w.sum()


def _positive_int(value: int, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


class _Ensemble:
    """Shared machinery: member validation, seeding, and reading the members' targets."""

    def __init__(self, members: Sequence[Agent], name: str) -> None:
        members = tuple(members)
        if not members:
            raise ConfigError(f"{type(self).__name__} needs at least one member agent, got none")
        for k, member in enumerate(members):
            if not isinstance(member, Agent):
                raise TypeError(
                    f"member {k} ({type(member).__name__}) is not an Agent: it needs a `name`, "
                    "`reset(*, seed)` and `act(observation, info)`"
                )
        self.members: tuple[Agent, ...] = members
        self.name = name
        self.member_targets: np.ndarray | None = None

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    def _who(self, k: int) -> str:
        return f"member {k} ({self.members[k].name!r}) of ensemble {self.name!r}"

    def _resumable_members(self) -> list[Resumable]:
        missing = [m.name for m in self.members if not isinstance(m, Resumable)]
        if missing:
            raise TypeError(f"ensemble {self.name!r} cannot be saved: {missing} have no get_state")
        return [m for m in self.members if isinstance(m, Resumable)]

    def get_state(self) -> dict[str, Any]:
        """The ensemble's own state and each member's (members must be resumable)."""
        members = self._resumable_members()
        own = {k: v for k, v in vars(self).items() if k != "members"}
        return {"own": copy.deepcopy(own), "members": [m.get_state() for m in members]}

    def set_state(self, state: Mapping[str, Any]) -> None:
        members = self._resumable_members()
        vars(self).update(copy.deepcopy(dict(state["own"])))
        for member, member_state in zip(members, state["members"], strict=True):
            member.set_state(member_state)

    def reset(self, *, seed: int | None = None) -> None:
        """Reset member ``k`` with ``seed + k`` (or ``None``) and the ensemble's own state."""
        for k, member in enumerate(self.members):
            member.reset(seed=None if seed is None else seed + k)
        self.member_targets = None
        self._reset_state()

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        size = len(info["weights"])
        targets = np.empty((len(self.members), size))
        for k, member in enumerate(self.members):
            targets[k] = normalize_target(member.act(observation, info), size, self._who(k))
        self.member_targets = targets
        return self._combine(targets, info)

    def diagnostics(self) -> dict[str, Any]:
        """The latest decision in plain Python values (see the subclasses for the keys)."""
        return {"members": list(self.member_names), **self._diagnostics()}

    def _reset_state(self) -> None:
        pass

    def _combine(self, targets: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def _diagnostics(self) -> dict[str, Any]:
        return {}


class WeightedAverageEnsemble(_Ensemble):
    """Weighted average of the members' normalised target weights.

    Args:
        members: the agents to combine.
        weights: one non-negative weight per member, not all zero (normalised to sum to 1);
            equal weights by default.
        name: the ensemble's name in results.

    ``diagnostics()``: ``members``, ``member_weights``.
    """

    def __init__(
        self,
        members: Sequence[Agent],
        weights: Sequence[float] | None = None,
        name: str = "weighted_average",
    ) -> None:
        super().__init__(members, name)
        n = len(self.members)
        self.weights = _member_weights(np.ones(n) if weights is None else weights, n, "weights")

    def _combine(self, targets: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        return self.weights @ targets

    def _diagnostics(self) -> dict[str, Any]:
        return {"member_weights": self.weights.tolist()}


class ConfidenceWeightedEnsemble(_Ensemble):
    """Average of the members' target weights, each weighted by its confidence of the step.

    A member states its confidence through an optional attribute, read right after its
    ``act`` every step::

        confidence: float | None  # in [0, 1]; None or absent counts as 1.0

    An LLM agent, for instance, sets ``self.confidence`` from the confidence field of its
    structured answer before returning the weights. A NaN, a value outside ``[0, 1]`` or a
    non-number raises ``ValueError`` naming the member. When every member says 0, the members
    count equally (the limit of shrinking all confidences together).

    ``diagnostics()``: ``members``, ``confidences``, ``member_weights`` (of the latest step).
    """

    def __init__(self, members: Sequence[Agent], name: str = "confidence_weighted") -> None:
        super().__init__(members, name)
        self._reset_state()

    def _reset_state(self) -> None:
        self.confidences: np.ndarray | None = None
        self.member_weights: np.ndarray | None = None

    def _confidence(self, k: int) -> float:
        member = self.members[k]
        value = member.confidence if isinstance(member, Confident) else None
        if value is None:
            return 1.0
        try:
            c = float(value)
        except (TypeError, ValueError):
            c = float("nan")
        if not 0.0 <= c <= 1.0:  # NaN fails too
            raise ValueError(
                f"{self._who(k)} has confidence {value!r}; expected a float in [0, 1] or None"
            )
        return c

    def _combine(self, targets: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        c = np.array([self._confidence(k) for k in range(len(self.members))])
        w = c / c.sum() if c.sum() > 0 else np.full(len(c), 1.0 / len(c))
        self.confidences, self.member_weights = c, w
        return w @ targets

    def _diagnostics(self) -> dict[str, Any]:
        return {
            "confidences": None if self.confidences is None else self.confidences.tolist(),
            "member_weights": None if self.member_weights is None else self.member_weights.tolist(),
        }


class VotingEnsemble(_Ensemble):
    """Voting over discrete per-asset signals; the assets held get equal weight.

    Member ``k`` *votes for* asset ``i`` when its normalised target weight for ``i`` exceeds
    ``threshold``. Methods:

    * ``"majority"``: hold the assets voted for by more than half of the members.
    * ``"weighted"``: hold the assets whose voters carry more than half of the total
      ``member_weights`` (equal weights by default, which is ``"majority"``).
    * ``"rank"`` (Borda count): each member ranks the ``N`` assets by its target weight
      (weights at or below ``threshold`` count as 0, no position); the lowest gets 0 points,
      the highest ``N - 1``, and tied assets share the average of the points they span.
      Points are summed over members (weighted by ``member_weights`` when given, scaled to
      average 1); the ``top_k`` best assets are held (default ``max(1, N // 2)``; more than
      ``N`` raises ``ValueError`` at the first step).

    Tie rules: exactly half (of the members or of the weight, to floating-point tolerance) is
    not a majority, so a tied asset is not held. In ``"rank"``, equal totals at the cut are
    broken by asset order (the lower index is held), and only assets with at least one vote can
    be held, so members that are all in cash keep the ensemble in cash. No asset held means
    all cash.

    ``diagnostics()``: ``members``, ``method``, ``support`` (the fraction of members or weight
    voting for each asset) or ``scores`` (Borda totals), and ``held`` (asset indices).
    """

    def __init__(
        self,
        members: Sequence[Agent],
        method: VotingMethod = "majority",
        member_weights: Sequence[float] | None = None,
        top_k: int | None = None,
        threshold: float = 1e-6,
        name: str | None = None,
    ) -> None:
        super().__init__(members, name or f"{method}_vote")
        if method not in VOTING_METHODS:
            raise ConfigError(f"method={method!r}: choose one of {list(VOTING_METHODS)}")
        if member_weights is not None and method == "majority":
            raise ConfigError(
                "member_weights apply to method='weighted' or 'rank', not 'majority' "
                "(one member, one vote)"
            )
        if top_k is not None and method != "rank":
            raise ConfigError(f"top_k applies to method='rank' only, got method={method!r}")
        if not (np.isfinite(threshold) and threshold >= 0):
            raise ConfigError(f"threshold must be a finite number >= 0, got {threshold!r}")
        n = len(self.members)
        self.method = method
        self.member_weights = _member_weights(
            np.ones(n) if member_weights is None else member_weights, n, "member_weights"
        )
        self.top_k = None if top_k is None else _positive_int(top_k, "top_k")
        self.threshold = float(threshold)
        self._reset_state()

    def _reset_state(self) -> None:
        self.held: np.ndarray | None = None
        self._tally: np.ndarray | None = None

    def _combine(self, targets: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        assets = targets[:, :-1]
        n = assets.shape[1]
        votes = assets > self.threshold
        if self.method == "majority":
            counts = votes.sum(axis=0)
            held = 2 * counts > len(self.members)
            self._tally = counts / len(self.members)
        elif self.method == "weighted":
            support = self.member_weights @ votes
            held = support > 0.5 + _TIE_TOLERANCE
            self._tally = support
        else:
            k = max(1, n // 2) if self.top_k is None else self.top_k
            if k > n:
                raise ConfigError(f"top_k={k} exceeds the number of assets ({n})")
            # weights scaled to average 1, so that equal weights give plain Borda totals
            positions = np.where(votes, assets, 0.0)  # below the threshold is no position
            scores = (len(self.members) * self.member_weights) @ _borda_points(positions)
            order = np.argsort(-scores, kind="stable")
            voted = votes.sum(axis=0) > 0  # assets with at least one vote
            order = order[voted[order]][:k]
            held = np.zeros(n, dtype=bool)
            held[order] = True
            self._tally = scores
        self.held = np.flatnonzero(held)
        out = np.zeros(n + 1)
        if self.held.size:
            out[self.held] = 1.0 / self.held.size
        else:
            out[-1] = 1.0
        return out

    def _diagnostics(self) -> dict[str, Any]:
        key = "scores" if self.method == "rank" else "support"
        return {
            "method": self.method,
            key: None if self._tally is None else self._tally.tolist(),
            "held": None if self.held is None else self.held.tolist(),
        }


def _borda_points(weights: np.ndarray) -> np.ndarray:
    """Borda points per member row: ``#{j: w_j < w_i} + (#{j != i: w_j == w_i}) / 2``.

    That is the 0-based average rank: 0 for the lowest weight, ``N - 1`` for the highest,
    ties sharing the mean of the ranks they span.
    """
    below = (weights[:, None, :] < weights[:, :, None]).sum(axis=-1)
    equal = (weights[:, None, :] == weights[:, :, None]).sum(axis=-1) - 1
    return below + 0.5 * equal


class _ShadowReturns:
    """Rolling close-to-close, cost-free returns of each member's previous targets."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.reset()

    def reset(self) -> None:
        self._returns: deque[np.ndarray] = deque(maxlen=self.window)
        self._prev_targets: np.ndarray | None = None
        self._prev_prices: np.ndarray | None = None

    def update(self, targets: np.ndarray, prices: Any) -> None:
        """Book the period that ends at the bar of ``prices``, then remember ``targets``."""
        p = np.asarray(prices, dtype=np.float64)
        if p.shape != (targets.shape[1] - 1,):
            raise ValueError(
                f"info['prices'] has shape {p.shape}; expected ({targets.shape[1] - 1},), the "
                "closes of the current bar for each asset"
            )
        if self._prev_targets is not None and self._prev_prices is not None:
            self._returns.append(self._prev_targets[:, :-1] @ (p / self._prev_prices - 1.0))
        self._prev_targets = targets.copy()
        self._prev_prices = p.copy()

    @property
    def count(self) -> int:
        return len(self._returns)

    @property
    def latest(self) -> np.ndarray:
        """Each member's return for the period that ended last (``(K,)``)."""
        return self._returns[-1]

    def matrix(self) -> np.ndarray:
        """The window's returns, ``(count, K)``, oldest first."""
        return np.vstack(self._returns)

    def sharpe(self, periods_per_year: int) -> np.ndarray:
        """Annualised Sharpe per member over the window; zero variance (all cash) scores 0."""
        ratios = np.asarray(
            sharpe_ratio(np.vstack(self._returns), periods_per_year=periods_per_year)
        )
        return np.nan_to_num(ratios, nan=0.0)


class PerformanceWeightedEnsemble(_Ensemble):
    """Average of the members' targets, weighted by a softmax of their recent Sharpe ratios.

    At step ``t`` each member's shadow return for the period ``t-1 -> t`` joins a rolling
    window of the last ``window`` returns (see the module docstring: close-to-close, no costs,
    no look-ahead). Once ``min_periods`` returns exist, member weights are
    ``softmax(sharpe_k / temperature)``, with ``sharpe_k`` the annualised
    :func:`~marketarena.evaluation.metrics.sharpe_ratio` of member ``k``'s window; before that
    they are equal. A member whose window has zero variance (in practice, all cash) scores a
    Sharpe of 0. A lower ``temperature`` concentrates weight on the best member.

    ``diagnostics()``: ``members``, ``member_weights``, ``sharpe`` (``None`` before
    ``min_periods``), ``n_returns``.
    """

    def __init__(
        self,
        members: Sequence[Agent],
        window: int = 63,
        temperature: float = 1.0,
        min_periods: int = 5,
        periods_per_year: int = PERIODS_PER_YEAR,
        name: str = "performance_weighted",
    ) -> None:
        super().__init__(members, name)
        self.window = _positive_int(window, "window", minimum=2)
        self.min_periods = _positive_int(min_periods, "min_periods", minimum=2)
        if self.min_periods > self.window:
            raise ConfigError(f"min_periods ({min_periods}) must not exceed window ({window})")
        if not (np.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.temperature = float(temperature)
        self.periods_per_year = _positive_int(periods_per_year, "periods_per_year")
        self._shadow = _ShadowReturns(self.window)
        self._reset_state()

    def _reset_state(self) -> None:
        self._shadow.reset()
        n = len(self.members)
        self.member_weights = np.full(n, 1.0 / n)
        self.sharpe: np.ndarray | None = None

    def _combine(self, targets: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        self._shadow.update(targets, info["prices"])
        if self._shadow.count >= self.min_periods:
            self.sharpe = self._shadow.sharpe(self.periods_per_year)
            self.member_weights = _softmax(self.sharpe / self.temperature)
        return self.member_weights @ targets

    def _diagnostics(self) -> dict[str, Any]:
        return {
            "member_weights": self.member_weights.tolist(),
            "sharpe": None if self.sharpe is None else self.sharpe.tolist(),
            "n_returns": self._shadow.count,
        }


@dataclass(frozen=True)
class Selection:
    """One rebalance decision of a :class:`SelectionEnsemble`.

    ``sharpe`` is the chosen member's annualised validation Sharpe; NaN when there was not
    yet a full validation window and the first member was followed by default.
    """

    step: int
    date: str
    index: int
    member: str
    sharpe: float


class SelectionEnsemble(_Ensemble):
    """The FinRL ensemble strategy: follow the member with the best recent Sharpe ratio.

    Every ``rebalance_every`` steps (steps 0, ``rebalance_every``, ...), the member with the
    highest annualised Sharpe over its last ``validation_window`` shadow returns (see the
    module docstring; data up to the current bar only) is selected, and the ensemble returns
    its normalised targets until the next rebalance. Ties go to the lower index; a
    zero-variance window (all cash) scores 0. Until a full ``validation_window`` of returns
    exists, a rebalance selects the first member, so put the default choice first.

    Annualisation uses ``periods_per_year`` (252 for daily bars) through
    :func:`~marketarena.evaluation.metrics.sharpe_ratio`. FinRL's ``DRLEnsembleAgent``
    multiplies the mean/std of *daily* returns by ``sqrt(4)`` (a quarterly factor), which leaves
    the ranking unchanged but reports Sharpe ratios too small by ``sqrt(63)``; the values in
    :attr:`history` are correctly annualised.

    Attributes:
        selected: index of the member currently followed.
        history: one :class:`Selection` per rebalance.

    ``diagnostics()``: ``members``, ``selected``, ``member``, ``sharpe`` (every member's
    latest validation Sharpe, ``None`` before a full window), ``history`` (as dicts).
    """

    def __init__(
        self,
        members: Sequence[Agent],
        rebalance_every: int = 63,
        validation_window: int = 63,
        periods_per_year: int = PERIODS_PER_YEAR,
        name: str = "selection",
    ) -> None:
        super().__init__(members, name)
        self.rebalance_every = _positive_int(rebalance_every, "rebalance_every")
        self.validation_window = _positive_int(validation_window, "validation_window", minimum=2)
        self.periods_per_year = _positive_int(periods_per_year, "periods_per_year")
        self._shadow = _ShadowReturns(self.validation_window)
        self._reset_state()

    def _reset_state(self) -> None:
        self._shadow.reset()
        self._step = 0
        self.selected = 0
        self.sharpe: np.ndarray | None = None
        self.history: list[Selection] = []

    def _combine(self, targets: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        self._shadow.update(targets, info["prices"])
        if self._step % self.rebalance_every == 0:
            if self._shadow.count >= self.validation_window:
                self.sharpe = self._shadow.sharpe(self.periods_per_year)
                self.selected = int(np.argmax(self.sharpe))
                chosen = float(self.sharpe[self.selected])
            else:
                self.selected, chosen = 0, float("nan")
            self.history.append(
                Selection(
                    step=self._step,
                    date=str(info.get("date", "")),
                    index=self.selected,
                    member=self.members[self.selected].name,
                    sharpe=chosen,
                )
            )
        self._step += 1
        return targets[self.selected].copy()

    def _diagnostics(self) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "member": self.members[self.selected].name,
            "sharpe": None if self.sharpe is None else self.sharpe.tolist(),
            "history": [asdict(s) for s in self.history],
        }


# --------------------------------------------------------------------------- the factory
#: every ensemble kind: its class and the arguments the kind fixes
ENSEMBLE_KINDS: dict[str, tuple[type[_Ensemble], dict[str, Any]]] = {
    "mean": (WeightedAverageEnsemble, {}),
    "confidence": (ConfidenceWeightedEnsemble, {}),
    "majority": (VotingEnsemble, {"method": "majority"}),
    "weighted_vote": (VotingEnsemble, {"method": "weighted"}),
    "rank": (VotingEnsemble, {"method": "rank"}),
    "performance": (PerformanceWeightedEnsemble, {}),
    "selection": (SelectionEnsemble, {}),
}


def make_ensemble(
    kind: str, members: Sequence[Agent], *, name: str | None = None, **options: Any
) -> Agent:
    """An ensemble of ``kind`` (:data:`ENSEMBLE_KINDS`) over ``members``.

    Args:
        kind: ``"mean"`` (:class:`WeightedAverageEnsemble`, optionally with ``weights``),
            ``"confidence"`` (:class:`ConfidenceWeightedEnsemble`), ``"majority"``,
            ``"weighted_vote"`` (with ``member_weights``; equal weights are a majority vote)
            or ``"rank"`` (:class:`VotingEnsemble`), ``"performance"``
            (:class:`PerformanceWeightedEnsemble`) or ``"selection"``
            (:class:`SelectionEnsemble`).
        members: the agents to combine (fresh ones: members must not share state with
            agents run on their own).
        name: the ensemble's name in results (default ``ensemble:<kind>``).
        options: the class's other arguments (``weights``, ``window``, ``top_k``, ...).

    An unknown kind, or an option the kind does not take, is a
    :class:`~marketarena.envs.errors.ConfigError` naming the valid ones.
    """
    if kind not in ENSEMBLE_KINDS:
        raise ConfigError(f"unknown ensemble kind {kind!r}; the kinds are: {list(ENSEMBLE_KINDS)}")
    cls, fixed = ENSEMBLE_KINDS[kind]
    takes = [p for p in inspect.signature(cls).parameters if p not in ("members", "name", *fixed)]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise ConfigError(f"ensemble {kind!r}: unknown option(s) {unknown}; it takes {takes}")
    return cls(members, name=name or f"ensemble:{kind}", **fixed, **options)


__all__ = [
    "ENSEMBLE_KINDS",
    "VOTING_METHODS",
    "ConfidenceWeightedEnsemble",
    "PerformanceWeightedEnsemble",
    "Selection",
    "SelectionEnsemble",
    "VotingEnsemble",
    "VotingMethod",
    "WeightedAverageEnsemble",
    "make_ensemble",
    "normalize_target",
]
