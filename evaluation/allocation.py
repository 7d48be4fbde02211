"""Multi-strategy allocation: an agent over other agents (strategies), each keeping a sleeve.

:class:`SleeveAllocator` treats each member agent as a strategy with its own sleeve of the
portfolio. The allocator sets the sleeve weights from the sleeves' trailing returns only, with
one of the well-kept allocation methods of skfolio (:data:`ALLOCATION_METHODS`):

==================  ==========================================================================
``equal``           1/K per sleeve
``inverse_volatility``  weights proportional to 1/volatility of each sleeve
``risk_parity``     equal risk contributions (skfolio ``RiskBudgeting``, variance)
``min_variance``    the long-only minimum-variance mix (skfolio ``MeanRisk``)
``hrp``             hierarchical risk parity (skfolio ``HierarchicalRiskParity``, López de
                    Prado 2016)
``performance``     dynamic, by trailing performance: ``softmax`` of each sleeve's annualised
                    Sharpe ratio over the window (the roadmap's "rebalancing by performance")
``factor``          risk parity on a factor-model covariance: each sleeve's return is regressed
                    (OLS) on the market factor, the equal-weighted return of the universe over
                    the same periods, and ``C = b b' var(f) + diag(residual variances)``
                    (skfolio ``TimeSeriesFactorModel``); fewer parameters than the sample
                    covariance, so steadier weights on short windows
==================  ==========================================================================

Sleeves drift with their returns between rebalances, as real sleeves do; the allocator
rebalances them back to the method's weights every ``rebalance_every`` decisions, and also
whenever a sleeve has drifted more than ``drift_band`` from its target. The portfolio it trades
is the sleeve-weighted sum of the members' target weights, so the simulator charges costs on
the *netted* trades (a buy in one sleeve and a sell in another of the same stock cancel).

Each member decides for its own sleeve: it sees the sleeve's weights as its portfolio (in
``info["weights"]`` and the observation), so a member that holds keeps its own sleeve, not the
whole portfolio. Sleeve returns are the members' shadow returns
(:mod:`marketarena.evaluation.ensembles`: close-to-close, cost-free, from each member's
previous targets and the closes of the current bar): no look-ahead. Until ``min_periods``
returns exist the sleeves are equal.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from marketarena.agents.base import Agent
from marketarena.envs.errors import ConfigError
from marketarena.evaluation.ensembles import (
    _Ensemble,
    _positive_int,
    _ShadowReturns,
    _softmax,
    normalize_target,
)
from marketarena.evaluation.metrics import PERIODS_PER_YEAR, sharpe_ratio

ALLOCATION_METHODS: tuple[str, ...] = (
    "equal",
    "inverse_volatility",
    "risk_parity",
    "min_variance",
    "hrp",
    "performance",
    "factor",
)


def allocate(method: str, returns: np.ndarray, factors: np.ndarray | None = None) -> np.ndarray:
    """Sleeve weights ``(K,)`` (non-negative, summing to 1) from ``(T, K)`` sleeve returns
    (and, for ``factor``, the ``(T, F)`` factor returns of the same periods).

    A sleeve without variance (all cash) makes the covariance singular; the volatility-based
    methods then give it the smallest positive volatility of the others, so that it is held
    (it is riskless) rather than failing the optimiser.
    """
    if method not in ALLOCATION_METHODS:
        raise ConfigError(
            f"unknown allocation method {method!r}; the methods are: {ALLOCATION_METHODS}"
        )
    returns = np.asarray(returns, dtype=np.float64)
    k = returns.shape[1]
    if method == "equal" or k == 1:
        return np.full(k, 1.0 / k)
    if method == "performance":
        sharpe = np.nan_to_num(
            np.asarray(sharpe_ratio(returns, periods_per_year=PERIODS_PER_YEAR)), nan=0.0
        )
        return _softmax(sharpe)
    returns = _jitter_flat(returns)
    if method == "inverse_volatility":
        inv = 1.0 / returns.std(axis=0, ddof=1)
        return inv / inv.sum()
    from skfolio.optimization import HierarchicalRiskParity, MeanRisk, RiskBudgeting

    if method == "factor":
        return _factor_risk_parity(returns, factors)
    model = {
        "risk_parity": RiskBudgeting,
        "min_variance": MeanRisk,
        "hrp": HierarchicalRiskParity,
    }[method]()
    with _nearest_positive_definite():
        model.fit(returns)
    weights = np.clip(np.asarray(model.weights_, dtype=np.float64), 0.0, None)
    return weights / weights.sum()


@contextmanager
def _nearest_positive_definite() -> Iterator[None]:
    """Sleeves that move almost together (two members holding the same stocks) give a
    singular sample covariance; skfolio then uses the nearest positive definite matrix and
    warns. That is its documented, safe behaviour, not news for the user: keep it quiet."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not positive definite", category=UserWarning)
        yield


def _factor_risk_parity(returns: np.ndarray, factors: np.ndarray | None) -> np.ndarray:
    from skfolio.optimization import RiskBudgeting
    from skfolio.prior import LoadingMatrixRegression, TimeSeriesFactorModel
    from sklearn.linear_model import LinearRegression

    if factors is None:
        raise ConfigError("the factor allocation needs the factor returns of the same periods")
    factors = np.asarray(factors, dtype=np.float64).reshape(len(returns), -1)
    if not (factors.std(axis=0, ddof=1) > 0).all():
        return allocate("risk_parity", returns)  # a flat factor explains nothing
    prior = TimeSeriesFactorModel(
        loading_matrix_estimator=LoadingMatrixRegression(linear_regressor=LinearRegression())
    )
    model = RiskBudgeting(prior_estimator=prior)
    with _nearest_positive_definite():
        model.fit(returns, factors=factors)
    weights = np.clip(np.asarray(model.weights_, dtype=np.float64), 0.0, None)
    return weights / weights.sum()


def _jitter_flat(returns: np.ndarray) -> np.ndarray:
    """Give a zero-variance column (an all-cash sleeve) a tiny deterministic variance."""
    std = returns.std(axis=0, ddof=1)
    flat = ~(std > 0)
    if not flat.any():
        return returns
    floor = std[~flat].min() * 1e-3 if (~flat).any() else 1e-8
    out = returns.copy()
    signs = np.where(np.arange(len(returns)) % 2 == 0, 1.0, -1.0)
    out[:, flat] = returns[:, flat] + floor * signs[:, None]
    return out


class SleeveAllocator(_Ensemble):
    """Sleeves over member strategies, weighted by an allocation method; see the module.

    Args:
        members: the strategies (at least two).
        method: one of :data:`ALLOCATION_METHODS`.
        window: trailing sleeve returns the method sees.
        rebalance_every: decisions between scheduled rebalances.
        drift_band: rebalance early when a sleeve drifts more than this from its target
            (absolute weight; None: on the schedule only).
        min_periods: sleeve returns needed before the first allocation (equal before).

    ``diagnostics()``: ``members``, ``method``, ``sleeve_weights`` (now, drifted),
    ``target_weights`` (the method's last), ``rebalances``, ``correlation`` (of the sleeves'
    trailing returns, None before ``min_periods``).
    """

    def __init__(
        self,
        members: Sequence[Agent],
        method: str = "risk_parity",
        window: int = 63,
        rebalance_every: int = 21,
        drift_band: float | None = None,
        min_periods: int = 20,
        name: str | None = None,
    ) -> None:
        super().__init__(members, name or f"allocate:{method}")
        self._holdings: np.ndarray | None = None  # each sleeve's weights, assets then cash
        self._last_prices: np.ndarray | None = None
        if len(self.members) < 2:
            raise ConfigError(
                f"an allocator needs at least two strategies, got {len(self.members)}: "
                "give two or more --agent members"
            )
        if method not in ALLOCATION_METHODS:
            raise ConfigError(
                f"unknown allocation method {method!r}; the methods are: {ALLOCATION_METHODS}"
            )
        self.method = method
        self.window = _positive_int(window, "window", minimum=2)
        self.rebalance_every = _positive_int(rebalance_every, "rebalance_every")
        self.min_periods = _positive_int(min_periods, "min_periods", minimum=2)
        if self.min_periods > self.window:
            raise ConfigError(f"min_periods ({min_periods}) must not exceed window ({window})")
        if drift_band is not None and not (np.isfinite(drift_band) and 0 < drift_band < 1):
            raise ConfigError(f"drift_band must be in (0, 1) or None, got {drift_band!r}")
        self.drift_band = drift_band
        self._shadow = _ShadowReturns(self.window)
        self._market = _ShadowReturns(self.window)  # the factor: the equal-weighted universe
        self._reset_state()

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        """Each member decides for its own sleeve: it sees the sleeve's weights (drifted with
        prices since its last decision) in ``info["weights"]`` and at the end of the
        observation, not the whole portfolio's, so a member that holds keeps its sleeve."""
        size = len(info["weights"])
        prices = np.asarray(info["prices"], dtype=np.float64)
        if self._holdings is None:
            holdings = np.zeros((len(self.members), size))
            holdings[:, -1] = 1.0  # every sleeve starts in cash, as the portfolio does
        else:
            holdings = self._holdings.copy()
            if self._last_prices is not None:
                holdings[:, :-1] *= prices / self._last_prices
                holdings /= holdings.sum(axis=1, keepdims=True)
        self._last_prices = prices.copy()
        obs = np.asarray(observation)
        targets = np.empty((len(self.members), size))
        for k, member in enumerate(self.members):
            own_obs = obs.copy()
            own_obs[..., -size:] = holdings[k]
            own_info = {**info, "weights": holdings[k].copy()}
            targets[k] = normalize_target(member.act(own_obs, own_info), size, self._who(k))
        self._holdings = targets.copy()
        self.member_targets = targets
        return self._combine(targets, info)

    def _reset_state(self) -> None:
        self._holdings = None
        self._last_prices = None
        self._shadow.reset()
        self._market.reset()
        k = len(self.members)
        self.target_weights = np.full(k, 1.0 / k)
        self.sleeve_weights = self.target_weights.copy()
        self.steps = 0
        self.rebalances = 0
        #: every period's sleeve returns, for the report's correlation analysis
        self.history_dates: list[str] = []
        self.history_returns: list[list[float]] = []

    def _combine(self, targets: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        self._shadow.update(targets, info["prices"])
        if self.method == "factor":
            n = targets.shape[1] - 1
            self._market.update(np.append(np.full(n, 1.0 / n), 0.0)[None, :], info["prices"])
        if self.steps > 0:  # every step but the first books the period that just ended
            latest = self._shadow.latest
            self.history_dates.append(str(info["date"]))
            self.history_returns.append(latest.tolist())
            growth = self.sleeve_weights * (1.0 + latest)
            self.sleeve_weights = growth / growth.sum()
        due = self.steps % self.rebalance_every == 0
        if self.drift_band is not None:
            due |= bool(np.abs(self.sleeve_weights - self.target_weights).max() > self.drift_band)
        if due:
            if self._shadow.count >= self.min_periods:
                factors = self._market.matrix() if self.method == "factor" else None
                self.target_weights = allocate(self.method, self._shadow.matrix(), factors)
            self.sleeve_weights = self.target_weights.copy()
            self.rebalances += 1
        self.steps += 1
        return self.sleeve_weights @ targets

    def correlation(self) -> np.ndarray | None:
        """The correlation matrix of the sleeves' trailing returns (None before
        ``min_periods``)."""
        if self._shadow.count < self.min_periods:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.corrcoef(self._shadow.matrix(), rowvar=False)

    def risk(self) -> dict[str, Any] | None:
        """The sleeves' risk over the trailing window, at the current sleeve weights ``w``:
        ``risk_contributions`` ``w_k (C w)_k / w'C w`` (they sum to 1) and the
        ``diversification_ratio`` ``sum_k w_k sigma_k / sqrt(w'C w)`` (1: no diversification),
        with ``C`` the sleeves' sample covariance. None before ``min_periods``."""
        if self._shadow.count < self.min_periods:
            return None
        cov = np.atleast_2d(np.cov(self._shadow.matrix(), rowvar=False))
        w = self.sleeve_weights
        variance = float(w @ cov @ w)
        if not variance > 0:
            return None
        return {
            "risk_contributions": (w * (cov @ w) / variance).tolist(),
            "diversification_ratio": float(w @ np.sqrt(np.diag(cov)) / np.sqrt(variance)),
        }

    def _diagnostics(self) -> dict[str, Any]:
        corr = self.correlation()
        return {
            "method": self.method,
            "sleeve_weights": self.sleeve_weights.tolist(),
            "target_weights": self.target_weights.tolist(),
            "rebalances": self.rebalances,
            "correlation": None if corr is None else np.nan_to_num(corr).tolist(),
            **(self.risk() or {}),
            "sleeve_returns": {"dates": self.history_dates, "returns": self.history_returns},
        }


def make_allocator(method: str, members: Sequence[Agent], **options: Any) -> SleeveAllocator:
    """A :class:`SleeveAllocator` with ``method`` over ``members`` (``options``: its other
    arguments)."""
    return SleeveAllocator(members, method=method, **options)
