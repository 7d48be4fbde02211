"""`EnvSettings`: every parameter of the portfolio envs, each with its one default.

:class:`~marketarena.envs.PortfolioEnv`, :class:`~marketarena.envs.PortfolioVectorEnv` and
:class:`~marketarena.envs.core.PortfolioCore` take an ``EnvSettings`` plus keyword overrides of
its fields. A training config's ``env`` section
(:class:`~marketarena.training.config.EnvConfig`) takes its env fields, their defaults and
bounds from here; backtest results and persisted runs store :meth:`EnvSettings.to_dict`. The
market (``data``) is not a setting: it is the env's first argument.

To add an env parameter, declare it in :class:`EnvSettings` (type, default, bounds or
conversion, a line in the docstring) and read ``settings.<name>`` where it acts: constructors,
configs, saved runs and results carry it with no other change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import numpy as np

from marketarena.envs.errors import ConfigError, MarketArenaError
from marketarena.envs.rewards import RewardFunction, make_reward
from marketarena.envs.risk import RiskSettings, build_risk
from marketarena.envs.simulator import RULE_PRESETS, StepResult, TradingRules

ActionMapping = Literal["normalize", "softmax", "signed", "discrete"]
ACTION_MAPPINGS: tuple[str, ...] = get_args(ActionMapping)
PriceDtype = Literal["float64", "float32"]
Reward = str | RewardFunction | Callable[[StepResult], np.ndarray]
#: the settings a trained model depends on: what it observes
OBSERVATION_SETTINGS = ("window", "features")
_BOUNDS = {"ge": ">=", "gt": ">", "lt": "<"}


@dataclass(frozen=True)
class ImpactSettings:
    """Price impact of the agents' net order flow and the noise traders of an arena
    (:class:`~marketarena.envs.arena.ArenaEnv`; its module docstring has the model).

    Attributes:
        eta: temporary impact coefficient (>= 0; default 0: none).
        beta: temporary impact exponent (> 0; default 0.5, the square-root law).
        gamma: permanent impact coefficient (>= 0; default 0: none).
        window: bars of trailing volatility and volume (>= 2; default 20).
        noise_scale: noise traders' flow per step as a multiple of trailing volume (>= 0;
            default 0: none).

    A plain :class:`~marketarena.envs.PortfolioEnv` or ``PortfolioVectorEnv`` refuses
    non-zero ``eta``, ``gamma`` or ``noise_scale`` (a :class:`ConfigError`), which it would
    otherwise ignore: impact is what the arena adds; one agent whose own trades move prices
    is ``ArenaEnv(n_agents=1, impact=...)``.
    Values are checked on construction; a bad one is a :class:`ConfigError` naming it.
    """

    eta: float = 0.0
    beta: float = 0.5
    gamma: float = 0.0
    window: int = 20
    noise_scale: float = 0.0

    def __post_init__(self) -> None:
        for name in ("eta", "beta", "gamma", "noise_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise ConfigError(f"impact.{name}={value!r}: takes a number")
            object.__setattr__(self, name, float(value))
        for name in ("eta", "gamma", "noise_scale"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ConfigError(f"impact.{name} must be a finite number >= 0, got {value}")
        if not np.isfinite(self.beta) or self.beta <= 0:
            raise ConfigError(f"impact.beta must be a finite number > 0, got {self.beta}")
        window = self.window
        if isinstance(window, bool) or not isinstance(window, int | np.integer):
            raise ConfigError(f"impact.window={window!r}: takes a whole number")
        if window < 2:
            raise ConfigError(f"impact.window must be >= 2, got {window}")
        object.__setattr__(self, "window", int(window))

    @property
    def active(self) -> bool:
        """Whether flow moves prices (``eta`` or ``gamma`` > 0)."""
        return self.eta > 0 or self.gamma > 0

    @property
    def inert(self) -> bool:
        """Whether nothing moves prices: no impact and no noise traders (``beta`` and
        ``window`` then do nothing)."""
        return not self.active and self.noise_scale == 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_impact(value: ImpactSettings | Mapping[str, Any] | None) -> ImpactSettings:
    """Impact settings from an :class:`ImpactSettings`, a dict of its fields, or None (the
    defaults: no impact)."""
    if value is None:
        return ImpactSettings()
    if isinstance(value, ImpactSettings):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"impact={value!r}: takes a mapping of its fields, e.g. {{eta: 0.1}}")
    known = [f.name for f in fields(ImpactSettings)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ConfigError(f"unknown impact setting(s) {unknown}; valid: {known}")
    return ImpactSettings(**dict(value))


def build_rules(rules: TradingRules | Mapping[str, Any] | str | None) -> TradingRules | None:
    """Rules from a :class:`TradingRules`, a preset name (:data:`RULE_PRESETS`), a dict of
    fields (optionally with ``preset``: its fields override the preset's), or None."""
    if rules is None or isinstance(rules, TradingRules):
        return rules
    if isinstance(rules, str):
        rules = {"preset": rules}
    known = TradingRules.__dataclass_fields__
    values = dict(rules)
    preset = values.pop("preset", None)
    if values.pop("stop_loss", None) is not None:  # None: a run saved before the move
        raise ConfigError(
            "rules.stop_loss is now risk.stop_loss: the risk layer exits to cash at the next "
            "fill (paying the costs) and can re-enter after risk.stop_cooldown decisions, "
            "where the old rule ended the episode still holding; set risk.stop_loss instead"
        )
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown trading rule(s) {unknown}; valid: {sorted(known)}")
    if preset is not None and preset not in RULE_PRESETS:
        raise ConfigError(f"unknown rules preset {preset!r}; available: {sorted(RULE_PRESETS)}")
    for key, value in values.items():
        needed = rule_type_error(key, value)
        if needed:
            raise ConfigError(f"rules.{key}={value!r}: {needed}")
    try:
        if preset is None:
            return TradingRules(**values)
        return dataclasses.replace(RULE_PRESETS[preset], **values)
    except ValueError as exc:  # TradingRules names the field and the bound
        if isinstance(exc, MarketArenaError):
            raise
        raise ConfigError(str(exc)) from None
    except TypeError as exc:  # a value of the wrong type, e.g. a word for a number
        raise ConfigError(f"trading rules {values}: {exc}") from None


def rule_type_error(key: str, value: Any) -> str | None:
    """What a :class:`TradingRules` field ``key`` takes, when ``value`` (as a config file or
    the command line parsed it) is not of that type; None when it is (or ``key`` is not a
    field: unknown names are reported with the valid ones)."""
    kind = _rule_types().get(key)
    if kind is None or _is_a(value, kind):
        return None
    return f"{key} takes {_described(kind)}"


@cache
def _rule_types() -> dict[str, Any]:
    return get_type_hints(TradingRules)


def _is_a(value: Any, kind: Any) -> bool:
    """Whether ``value`` is of ``kind``: a number for a float (not a boolean), an integer for
    an int, true/false for a bool, one of a Literal's values."""
    if get_origin(kind) in (Union, UnionType):
        return any(_is_a(value, k) for k in get_args(kind))
    if get_origin(kind) is Literal:
        return value in get_args(kind)
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _described(kind: Any) -> str:
    """``a number or null``, ``true or false``, ``one of 'next_open', ...``."""
    if get_origin(kind) in (Union, UnionType):
        return " or ".join(_described(k) for k in get_args(kind))
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(kind))
    names = {float: "a number", int: "a whole number", bool: "true or false", str: "a word"}
    return "null" if kind is type(None) else names.get(kind, kind.__name__)


def _rules(rules: TradingRules | Mapping[str, Any] | str | None) -> TradingRules:
    return build_rules(rules) or TradingRules()


def _names(features: str | Any) -> tuple[str, ...]:
    return (features,) if isinstance(features, str) else tuple(features)


def _kwargs(kwargs: Mapping[str, float] | None) -> dict[str, float]:
    return dict(kwargs or {})


def _dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name


def _meta(
    *,
    convert: Callable[[Any], Any] | None = None,
    file_type: Any = None,
    file_default: Callable[[], Any] | None = None,
    **bounds: float,
) -> dict[str, Any]:
    """The metadata of a field of :class:`EnvSettings`.

    Args:
        convert: turns an accepted value into the stored one (e.g. a preset name into
            :class:`TradingRules`); None is stored as it is where the type allows None.
        file_type, file_default: how a config file holds the setting when that differs from
            the stored type (a reward by name; rules as a dict of fields, empty by default).
        bounds: ``ge``, ``gt``, ``lt`` limits, checked here and by configs.
    """
    return {
        "convert": convert,
        "bounds": bounds,
        "file_type": file_type,
        "file_default": file_default,
    }


@dataclass(frozen=True)
class EnvSettings:
    """Every parameter of the portfolio envs and its default; see
    :class:`~marketarena.envs.PortfolioEnv` for what the env does with them (Timing, Action
    Space, Rewards, Starting State, Episode End).

    Attributes:
        start, end: inclusive date range of the episodes (e.g. a split; ``None``: the data's
            ends); earlier rows still feed the observation window.
        window: rows of features in the observation.
        features: feature names (:mod:`marketarena.envs.features`, or the data's own columns).
        reward, reward_kwargs: a reward name (``"log_return"``, ``"differential_sharpe"``,
            ``"drawdown_penalized"``) and its arguments (any named reward also takes
            ``turnover_penalty``), a :class:`RewardFunction`, or a callable on the step result.
        rules: :class:`TradingRules`; also accepted as a dict of its fields (with an optional
            ``preset``), a preset name (``"aitrader"``) or None (the defaults).
        episode_length: steps per episode, or ``None`` to run to ``end``.
        random_start: draw each episode's start (else the first eligible date).
        action_mapping: how actions become target weights: ``"normalize"``, ``"softmax"``,
            ``"signed"`` (needs ``rules.allow_short``) or ``"discrete"``.
        softmax_scale: the temperature's inverse of the ``"softmax"`` mapping.
        discrete_levels: levels per entry of the ``"discrete"`` mapping.
        rebalance_band, relative_band: a no-trade band (0: off): an asset whose target is
            within the band of its current weight is not traded, so holding is free; with
            ``relative_band`` the band shrinks for small weights (see ``ActionSpec``).
        price_dtype: ``"float64"`` (exact) or ``"float32"`` (half the memory of the price
            tables; also accepted as a numpy type).
        reward_scale: every reward is multiplied by it (e.g. to bring daily log returns,
            ~0.01, to the unit scale value networks learn best at, without VecNormalize).
        risk: risk rules between the agent's target weights and the simulator
            (:class:`~marketarena.envs.risk.RiskSettings`; also a dict of its fields; all off
            by default), so agents train and trade under them.
        impact: price impact and noise traders (:class:`ImpactSettings`; also a dict of its
            fields; none by default). Only :class:`~marketarena.envs.arena.ArenaEnv` models
            it: the single and vector envs refuse non-zero impact or noise.

    Values are converted and checked on construction (a bad one is a
    :class:`~marketarena.envs.errors.ConfigError`, a ``ValueError``, naming it); checks that
    need the data (a window or episode too long for the date range, unknown features) happen
    when an env is built.
    """

    start: str | None = field(default=None, metadata=_meta())
    end: str | None = field(default=None, metadata=_meta())
    window: int = field(default=32, metadata=_meta(convert=int, ge=1))
    features: tuple[str, ...] = field(default=("log_return",), metadata=_meta(convert=_names))
    reward: Reward = field(default="log_return", metadata=_meta(file_type=str))
    reward_kwargs: dict[str, float] = field(default_factory=dict, metadata=_meta(convert=_kwargs))
    rules: TradingRules = field(
        default_factory=TradingRules,
        metadata=_meta(convert=_rules, file_type=dict[str, Any], file_default=dict),
    )
    episode_length: int | None = field(default=252, metadata=_meta(convert=int, ge=1))
    random_start: bool = field(default=True, metadata=_meta())
    action_mapping: ActionMapping = field(default="normalize", metadata=_meta())
    softmax_scale: float = field(default=5.0, metadata=_meta(convert=float, gt=0))
    discrete_levels: int = field(default=3, metadata=_meta(convert=int, ge=2))
    rebalance_band: float = field(default=0.0, metadata=_meta(convert=float, ge=0, lt=1))
    relative_band: float = field(default=0.0, metadata=_meta(convert=float, ge=0, lt=1))
    price_dtype: PriceDtype = field(default="float64", metadata=_meta(convert=_dtype_name))
    reward_scale: float = field(default=1.0, metadata=_meta(convert=float, gt=0))
    risk: RiskSettings = field(
        default_factory=RiskSettings,
        metadata=_meta(convert=build_risk, file_type=dict[str, Any], file_default=dict),
    )
    impact: ImpactSettings = field(
        default_factory=ImpactSettings,
        metadata=_meta(convert=build_impact, file_type=dict[str, Any], file_default=dict),
    )

    def __post_init__(self) -> None:
        given = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in check_settings(**given).items():
            object.__setattr__(self, name, value)
        if self.action_mapping == "signed" and not self.rules.allow_short:
            raise ConfigError("action_mapping='signed' needs rules.allow_short=True")
        make_reward(self.reward, **self.reward_kwargs)  # names the reward and the argument

    @classmethod
    def resolve(
        cls, settings: EnvSettings | None = None, overrides: Mapping[str, Any] | None = None
    ) -> EnvSettings:
        """``settings`` (default: the defaults) with ``overrides`` of its fields."""
        if settings is None:
            return cls.from_dict(overrides or {})
        if not isinstance(settings, EnvSettings):
            raise TypeError(f"settings must be an EnvSettings, got {type(settings).__name__}")
        return settings.replace(**overrides) if overrides else settings

    def replace(self, **overrides: Any) -> EnvSettings:
        """A copy with ``overrides``; an unknown name is an error listing the valid ones."""
        _known(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Every setting, JSON-safe: rules as a dict of all their fields, features as a list,
        a reward given as a function by its qualified name (which :meth:`from_dict` cannot
        rebuild)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, TradingRules | RiskSettings | ImpactSettings):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            elif callable(value) or isinstance(value, RewardFunction):
                named = value if hasattr(value, "__qualname__") else type(value)
                value = f"{named.__module__}.{named.__qualname__}"
            elif value is not None and not isinstance(value, str | int | float | bool):
                value = str(value)  # dates given as numpy or pandas values
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EnvSettings:
        """Settings from :meth:`to_dict` (or any subset of it: the rest are the defaults)."""
        _known(values)
        return cls(**values)

    def observation(self) -> dict[str, Any]:
        """The settings that shape the observation (:data:`OBSERVATION_SETTINGS`)."""
        return {name: getattr(self, name) for name in OBSERVATION_SETTINGS}


def setting_names() -> tuple[str, ...]:
    """The names of every setting, in declaration order."""
    return tuple(f.name for f in fields(EnvSettings))


def _known(values: Mapping[str, Any]) -> None:
    unknown = sorted(set(values) - set(setting_names()))
    if unknown:
        raise ConfigError(f"unknown env setting(s) {unknown}; valid: {list(setting_names())}")


@cache
def _types() -> dict[str, Any]:
    return get_type_hints(EnvSettings)


def _allows_none(kind: Any) -> bool:
    return type(None) in get_args(kind)


def check_settings(**values: Any) -> dict[str, Any]:
    """``values`` of the named settings, each converted and checked on its own (the checks
    between settings happen in :class:`EnvSettings`); a bad value is a
    :class:`~marketarena.envs.errors.ConfigError` (a ``ValueError``) naming the setting."""
    _known(values)
    spec = {f.name: f for f in fields(EnvSettings)}
    out: dict[str, Any] = {}
    for name, value in values.items():
        meta, kind = spec[name].metadata, _types()[name]
        if value is None and _allows_none(kind):
            out[name] = None
            continue
        if meta["convert"] is not None:
            try:
                value = meta["convert"](value)
            except (TypeError, ValueError) as exc:
                if isinstance(exc, ValueError) and meta["convert"] not in (int, float):
                    raise  # the converter's own message (e.g. an unknown trading rule)
                raise ConfigError(f"{name}={value!r}: {exc}") from None
        if get_origin(kind) is Literal and value not in get_args(kind):
            raise ConfigError(f"{name}={value!r}: choose one of {list(get_args(kind))}")
        for bound, limit in meta["bounds"].items():
            ok = {"ge": value >= limit, "gt": value > limit, "lt": value < limit}[bound]
            if not ok:
                none = " or None" if _allows_none(kind) else ""
                raise ConfigError(f"{name} must be {_BOUNDS[bound]} {limit}{none}, got {value}")
        out[name] = value
    return out


@dataclass(frozen=True)
class FileField:
    """One setting as a config file holds it (see ``EnvConfig``): its type, its default
    (``default_factory`` for a mutable one) and its bounds (``ge``, ``gt``, ``lt``)."""

    name: str
    type: Any
    default: Any
    default_factory: Callable[[], Any] | None
    bounds: Mapping[str, float]


def file_fields() -> tuple[FileField, ...]:
    """Every setting as a config file holds it, in declaration order."""
    out = []
    for f in fields(EnvSettings):
        meta = f.metadata
        factory = meta["file_default"] or (
            None if f.default_factory is MISSING else f.default_factory
        )
        default = MISSING if factory is not None else f.default
        out.append(
            FileField(
                f.name,
                meta["file_type"] or _types()[f.name],
                default,
                factory,
                dict(meta["bounds"]),
            )
        )
    return tuple(out)
