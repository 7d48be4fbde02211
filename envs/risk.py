"""Risk controls: a layer between any agent's target weights and the simulator.

Every agent (a baseline, an SB3 model, an LLM, an ensemble) hands the env target weights; when
``EnvSettings.risk`` sets any rule, :class:`RiskLayer` rewrites them before the simulator fills
them, so RL trains under the same rules that ``evaluate``, ``backtest`` and LLM runs trade
under. The rules, in the order they act:

=================  =========================================================================
``stop_loss``      when NAV is ``stop_loss`` below its peak (e.g. 0.2), exit to cash: the
                   orders fill at the next fill like any others and pay the costs. Stay in cash
                   for ``stop_cooldown`` more decisions; then trade again, measuring the
                   drawdown from the NAV at re-entry.
``drawdown_derisk``  steps ``{drawdown: max exposure}``: e.g. ``{0.1: 0.5, 0.2: 0.25}`` caps
                   gross exposure at 50% from a 10% drawdown, at 25% from 20%.
``vol_target``     scale exposure down so that the target portfolio's volatility, estimated
                   from the last ``vol_lookback`` sessions' returns (annualised, data up to the
                   decision only), is at most ``vol_target`` (never levered up).
``max_weight``     at most this weight (absolute) in any one symbol; the excess stays in cash.
``sector_limit``   at most this gross weight in any sector (``sector_limits`` per sector
                   override it); a sector over its cap is scaled down. Sectors come from
                   ``sectors``: the bundled map (``envs/datasets/sectors.csv``, GICS sectors
                   of the bundled panels' stocks), a CSV file (``symbol,sector``) or a mapping.
``max_gross``      at most this sum of absolute weights; everything is scaled down.
``max_net``        at most this net weight (>= 0; longs are scaled down); ``min_net`` (<= 0)
                   at least this one (shorts are scaled down). The layer only ever trims.
``max_turnover``   at most this sum of absolute weight changes per decision: the move from the
                   current weights toward the target is shortened. A stop-loss exit is not
                   slowed, and the limits above still hold after it (where the current
                   weights break a limit, mending it is turnover too).
=================  =========================================================================

Each decision's interventions are recorded per rule as the sum of absolute weight changes the
rule made (:attr:`RiskLayer.last`); the env reports them in ``info["risk"]`` and backtest
results keep them day by day.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from marketarena.envs.errors import ConfigError, DataError, MissingFileError

#: the rules in the order they act, as recorded in interventions
RULES = (
    "stop_loss",
    "drawdown_derisk",
    "vol_target",
    "max_weight",
    "sector_limit",
    "max_gross",
    "max_net",
    "min_net",
    "max_turnover",
)
BUNDLED_SECTORS = "bundled"


def _optional(name: str, value: Any, low: float, high: float | None = None) -> float | None:
    """``value`` as a float in ``(low, high]`` (or None); a clear error otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"risk.{name}={value!r}: takes a number or null")
    value = float(value)
    if not np.isfinite(value) or value <= low or (high is not None and value > high):
        where = f"in ({low:g}, {high:g}]" if high is not None else f"> {low:g}"
        raise ConfigError(f"risk.{name}={value!r}: must be {where}")
    return value


@dataclass(frozen=True)
class RiskSettings:
    """The risk rules (each off by default); see the module docstring for what they do.

    Values are checked on construction; a bad one, or limits that contradict each other, is
    a :class:`~marketarena.envs.errors.ConfigError` naming the rule.
    """

    stop_loss: float | None = None
    stop_cooldown: int = 0
    drawdown_derisk: dict[float, float] = field(default_factory=dict)
    vol_target: float | None = None
    vol_lookback: int = 20
    max_weight: float | None = None
    sector_limit: float | None = None
    sector_limits: dict[str, float] = field(default_factory=dict)
    sectors: str | dict[str, str] = BUNDLED_SECTORS
    max_gross: float | None = None
    max_net: float | None = None
    min_net: float | None = None
    max_turnover: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "stop_loss", _optional("stop_loss", self.stop_loss, 0.0, 1.0))
        set_(self, "vol_target", _optional("vol_target", self.vol_target, 0.0))
        set_(self, "max_weight", _optional("max_weight", self.max_weight, 0.0))
        set_(self, "sector_limit", _optional("sector_limit", self.sector_limit, 0.0))
        set_(self, "max_gross", _optional("max_gross", self.max_gross, 0.0))
        set_(self, "max_turnover", _optional("max_turnover", self.max_turnover, 0.0))
        if self.max_net is not None:
            value = _optional("max_net", self.max_net, -np.inf)
            if value is not None and value < 0:
                raise ConfigError(
                    f"risk.max_net={value}: must be >= 0 (the layer trims longs to meet it; "
                    "it never adds positions)"
                )
            set_(self, "max_net", value)
        if self.min_net is not None:
            value = _optional("min_net", self.min_net, -np.inf)
            if value is not None and value > 0:
                raise ConfigError(
                    f"risk.min_net={value}: must be <= 0 (the layer trims shorts to meet it; "
                    "it never adds positions)"
                )
            set_(self, "min_net", value)
        for name in ("stop_cooldown", "vol_lookback"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"risk.{name}={value!r}: takes a whole number")
        if self.stop_cooldown < 0:
            raise ConfigError(f"risk.stop_cooldown={self.stop_cooldown}: must be >= 0")
        if self.vol_lookback < 2:
            raise ConfigError(f"risk.vol_lookback={self.vol_lookback}: must be >= 2")
        set_(self, "drawdown_derisk", _steps(self.drawdown_derisk))
        limits = {}
        for sector, cap in dict(self.sector_limits or {}).items():
            limits[str(sector)] = _optional(f"sector_limits.{sector}", cap, 0.0)
        set_(self, "sector_limits", limits)
        if not isinstance(self.sectors, str | Mapping):
            raise ConfigError(
                f"risk.sectors={self.sectors!r}: takes 'bundled', a CSV file (symbol,sector) "
                "or a mapping of symbol to sector"
            )
        if isinstance(self.sectors, Mapping):
            set_(self, "sectors", {str(k): str(v) for k, v in self.sectors.items()})
        if self.max_net is not None and self.min_net is not None and self.max_net < self.min_net:
            raise ConfigError(f"risk.max_net={self.max_net} is below risk.min_net={self.min_net}")
        if (
            self.max_weight is not None
            and self.max_gross is not None
            and self.max_weight > self.max_gross
        ):
            raise ConfigError(
                f"risk.max_weight={self.max_weight} exceeds risk.max_gross={self.max_gross}: "
                "no portfolio can reach it"
            )

    @property
    def active(self) -> bool:
        """Whether any rule is on."""
        return any(
            (
                self.stop_loss is not None,
                bool(self.drawdown_derisk),
                self.vol_target is not None,
                self.max_weight is not None,
                self.sector_limit is not None,
                bool(self.sector_limits),
                self.max_gross is not None,
                self.max_net is not None,
                self.min_net is not None,
                self.max_turnover is not None,
            )
        )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["drawdown_derisk"] = {str(k): v for k, v in self.drawdown_derisk.items()}
        return out


def _steps(steps: Any) -> dict[float, float]:
    """``{drawdown: max exposure}`` with drawdowns in (0, 1), exposures >= 0, exposures not
    rising with the drawdown."""
    if not isinstance(steps, Mapping):
        raise ConfigError(
            f"risk.drawdown_derisk={steps!r}: takes a mapping of drawdown to maximum exposure, "
            "e.g. {0.1: 0.5, 0.2: 0.25}"
        )
    out: dict[float, float] = {}
    for key, value in steps.items():
        try:
            drawdown, exposure = float(key), float(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"risk.drawdown_derisk: {key!r}: {value!r} is not a drawdown and an exposure"
            ) from None
        if not 0 < drawdown < 1 or not exposure >= 0:
            raise ConfigError(
                f"risk.drawdown_derisk: {key!r}: {value!r}: drawdowns must be in (0, 1) and "
                "exposures >= 0"
            )
        out[drawdown] = exposure
    ordered = sorted(out.items())
    for (d0, e0), (d1, e1) in itertools.pairwise(ordered):
        if e1 > e0:
            raise ConfigError(
                f"risk.drawdown_derisk: the exposure rises from {e0} at a {d0} drawdown to {e1} "
                f"at {d1}: deeper drawdowns must not allow more exposure"
            )
    return dict(ordered)


def build_risk(value: RiskSettings | Mapping[str, Any] | None) -> RiskSettings:
    """Risk settings from a :class:`RiskSettings`, a dict of its fields, or None (all off)."""
    if value is None:
        return RiskSettings()
    if isinstance(value, RiskSettings):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"risk={value!r}: takes a mapping of rules, e.g. {{max_weight: 0.2}}")
    known = [f.name for f in fields(RiskSettings)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ConfigError(f"unknown risk rule(s) {unknown}; valid: {known}")
    try:
        return RiskSettings(**dict(value))
    except TypeError as exc:
        raise ConfigError(f"risk settings {dict(value)}: {exc}") from None


def load_sectors(source: str | Mapping[str, str]) -> dict[str, str]:
    """``symbol -> sector`` from ``"bundled"``, a CSV file with ``symbol`` and ``sector``
    columns, or a mapping."""
    if isinstance(source, Mapping):
        return dict(source)
    if source == BUNDLED_SECTORS:
        text = (resources.files("marketarena.envs.datasets") / "sectors.csv").read_text()
        where = "the bundled sector map"
    else:
        path = Path(source)
        if not path.is_file():
            raise MissingFileError(f"risk.sectors: sector map not found: {path}")
        text, where = path.read_text(), str(path)
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or not {"symbol", "sector"} <= set(rows[0]):
        raise DataError(f"{where}: needs the columns symbol and sector")
    out: dict[str, str] = {}
    for i, row in enumerate(rows, start=2):
        symbol, sector = (row.get("symbol") or "").strip(), (row.get("sector") or "").strip()
        if not symbol or not sector:
            raise DataError(f"{where}, line {i}: a symbol and a sector are both needed")
        out[symbol] = sector
    return out


class RiskLayer:
    """The rules of a :class:`RiskSettings` bound to a universe, over ``n_envs`` portfolios.

    Args:
        settings: the rules.
        symbols: the universe, in the env's order.
        close: the ``(T, N)`` closes (for the volatility estimate, read up to each decision's
            row only).
        n_envs: portfolios handled at once.
        periods_per_year: bars per year (annualises the volatility).
    """

    def __init__(
        self,
        settings: RiskSettings,
        symbols: tuple[str, ...],
        close: np.ndarray,
        n_envs: int = 1,
        periods_per_year: int = 252,
    ) -> None:
        self.settings = s = settings
        self.n_envs, self.n_assets = n_envs, len(symbols)
        self.periods_per_year = periods_per_year
        self._log_close = np.log(np.asarray(close, dtype=np.float64))
        self.sector_names: list[str] = []
        self.sector_masks = np.zeros((0, self.n_assets), dtype=bool)
        self.sector_caps = np.zeros(0)
        if s.sector_limit is not None or s.sector_limits:
            self._bind_sectors(symbols)
        self._steps = np.array(list(s.drawdown_derisk.items())).reshape(-1, 2)
        self.peak = np.full(n_envs, np.nan)
        self.stopped = np.zeros(n_envs, dtype=bool)
        self.cooldown = np.zeros(n_envs, dtype=np.int64)
        self.last: dict[str, np.ndarray] = {}

    def _bind_sectors(self, symbols: tuple[str, ...]) -> None:
        s = self.settings
        sectors = load_sectors(s.sectors)
        missing = [x for x in symbols if x not in sectors]
        if missing:
            raise ConfigError(
                f"risk.sector_limit: no sector for {missing} in the sector map "
                f"({s.sectors if isinstance(s.sectors, str) else 'given'}); add them, or give "
                "risk.sectors a CSV file (symbol,sector)"
            )
        names = sorted({sectors[x] for x in symbols})
        unknown = sorted(set(s.sector_limits) - set(names))
        if unknown:
            raise ConfigError(
                f"risk.sector_limits names sector(s) {unknown} that no symbol of this universe "
                f"is in; its sectors: {names}"
            )
        caps = [s.sector_limits.get(name, s.sector_limit) for name in names]
        keep = [i for i, cap in enumerate(caps) if cap is not None]
        self.sector_names = [names[i] for i in keep]
        self.sector_masks = np.array(
            [[sectors[x] == names[i] for x in symbols] for i in keep], dtype=bool
        ).reshape(len(keep), len(symbols))
        self.sector_caps = np.array([caps[i] for i in keep], dtype=np.float64)

    # ---------------------------------------------------------------- state
    def reset(self, ids: np.ndarray | None = None) -> None:
        """Fresh state for envs ``ids`` (all by default): no peak yet, not stopped."""
        sel = slice(None) if ids is None else ids
        self.peak[sel] = np.nan
        self.stopped[sel] = False
        self.cooldown[sel] = 0
        for amounts in self.last.values():  # a fresh episode reports no intervention yet
            amounts[sel] = 0.0

    def get_state(self) -> dict[str, np.ndarray]:
        return {
            "peak": self.peak.copy(),
            "stopped": self.stopped.copy(),
            "cooldown": self.cooldown.copy(),
        }

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        self.peak[:] = state["peak"]
        self.stopped[:] = state["stopped"]
        self.cooldown[:] = state["cooldown"]

    # ---------------------------------------------------------------- rules
    def apply(
        self, target: np.ndarray, current: np.ndarray, nav: np.ndarray, t: np.ndarray
    ) -> np.ndarray:
        """Target asset weights ``(n_envs, N)`` after the rules (a new array).

        ``current``: each env's asset weights now; ``nav``: its NAV at the decision's mark;
        ``t``: its decision row in ``close``. Records :attr:`last` (rule -> ``(n_envs,)`` sum of
        absolute weight changes the rule made).
        """
        s = self.settings
        w = np.array(target, dtype=np.float64)
        self.last = {}
        nav = np.asarray(nav, dtype=np.float64)
        self.peak = np.fmax(self.peak, nav)  # NaN (no peak yet) takes the NAV
        exiting = np.zeros(self.n_envs, dtype=bool)
        if s.stop_loss is not None:
            exiting = self._stop_loss(w, nav)
        drawdown = 1.0 - nav / self.peak
        if len(self._steps):
            hit = drawdown[:, None] >= self._steps[None, :, 0]
            cap = np.where(hit, self._steps[None, :, 1], np.inf).min(axis=1)
            self._scale_to(w, cap, "drawdown_derisk")
        if s.vol_target is not None:
            self._scale_to(w, self._vol_cap(w, np.asarray(t)), "vol_target")
        self._limits(w)
        if s.max_turnover is not None:
            before = w.copy()
            move = w - current
            size = np.abs(move).sum(axis=1)
            shorten = (size > s.max_turnover) & ~exiting
            if shorten.any():
                factor = s.max_turnover / size[shorten]
                w[shorten] = current[shorten] + move[shorten] * factor[:, None]
                self._record("max_turnover", before, w)
                self._limits(w)
        return w

    def _stop_loss(self, w: np.ndarray, nav: np.ndarray) -> np.ndarray:
        """Exit to cash where the drawdown reaches the stop; hold cash through the cool-down;
        re-enter after it from a fresh peak. Returns the envs exiting now or held out."""
        s = self.settings
        assert s.stop_loss is not None
        waiting = self.stopped & (self.cooldown > 0)
        self.cooldown[waiting] -= 1
        released = self.stopped & ~waiting
        self.stopped[released] = False
        self.peak[released] = nav[released]  # the drawdown counts from the re-entry
        triggered = ~self.stopped & (nav <= (1.0 - s.stop_loss) * self.peak)
        self.stopped[triggered] = True
        self.cooldown[triggered] = s.stop_cooldown
        out = self.stopped.copy()
        if out.any():
            before = w.copy()
            w[out] = 0.0
            self._record("stop_loss", before, w)
        return out

    def _vol_cap(self, w: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The gross exposure at which each target's estimated volatility is ``vol_target``
        (inf where it is below it, or where too few sessions exist to estimate it)."""
        s = self.settings
        assert s.vol_target is not None
        k = s.vol_lookback
        cap = np.full(self.n_envs, np.inf)
        ok = t >= k
        if not ok.any():
            return cap
        rows = t[ok][:, None] + np.arange(-k, 1)[None, :]  # (m, k + 1) rows up to t
        returns = np.diff(self._log_close[rows], axis=1)  # (m, k, N): data <= t only
        returns = returns - returns.mean(axis=1, keepdims=True)
        cov = np.einsum("mki,mkj->mij", returns, returns) / (k - 1)
        wk = w[ok]
        var = np.einsum("mi,mij,mj->m", wk, cov, wk) * self.periods_per_year
        vol = np.sqrt(np.maximum(var, 0.0))
        gross = np.abs(wk).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cap[ok] = np.where(vol > s.vol_target, gross * s.vol_target / vol, np.inf)
        return cap

    def _scale_to(self, w: np.ndarray, cap: np.ndarray, rule: str) -> None:
        """Scale rows of ``w`` whose gross exposure exceeds ``cap`` down to it."""
        gross = np.abs(w).sum(axis=1)
        over = gross > cap
        if over.any():
            before = w.copy()
            w[over] *= (cap[over] / gross[over])[:, None]
            self._record(rule, before, w)

    def _limits(self, w: np.ndarray) -> None:
        """The hard limits, in place: symbol, sector, gross, net."""
        s = self.settings
        if s.max_weight is not None and (np.abs(w) > s.max_weight).any():
            before = w.copy()
            np.clip(w, -s.max_weight, s.max_weight, out=w)
            self._record("max_weight", before, w)
        if len(self.sector_caps):
            exposure = np.abs(w) @ self.sector_masks.T  # (n, sectors)
            over = exposure > self.sector_caps[None, :]
            if over.any():
                before = w.copy()
                with np.errstate(divide="ignore", invalid="ignore"):
                    factor = np.where(over, self.sector_caps[None, :] / exposure, 1.0)
                # each symbol is in one sector: its factor is that sector's
                w *= factor @ self.sector_masks.astype(np.float64) + (
                    ~self.sector_masks.any(axis=0)
                )
                self._record("sector_limit", before, w)
        if s.max_gross is not None:
            self._scale_to(w, np.full(self.n_envs, s.max_gross), "max_gross")
        if s.max_net is not None:
            self._trim_side(w, np.maximum(w, 0.0), w.sum(axis=1) - s.max_net, "max_net")
        if s.min_net is not None:
            self._trim_side(w, np.minimum(w, 0.0), s.min_net - w.sum(axis=1), "min_net")

    def _trim_side(self, w: np.ndarray, side: np.ndarray, excess: np.ndarray, rule: str) -> None:
        """Scale one side (longs or shorts, ``side``) down by ``excess`` of net weight."""
        size = np.abs(side).sum(axis=1)
        over = (excess > 1e-15) & (size > 0)
        if over.any():
            before = w.copy()
            keep = np.clip(1.0 - excess[over] / size[over], 0.0, 1.0)
            w[over] = w[over] - side[over] * (1.0 - keep)[:, None]
            self._record(rule, before, w)

    def _record(self, rule: str, before: np.ndarray, after: np.ndarray) -> None:
        amount = np.abs(after - before).sum(axis=1)
        self.last[rule] = self.last.get(rule, np.zeros(self.n_envs)) + amount
