"""Training configs: YAML files loaded into typed, validated objects.

Precedence, lowest first: the defaults here < the YAML file < ``--set key.sub=value``
overrides (and, for tuning, a trial's parameters go between the file and the overrides).
Unknown keys and bad values are errors that name the key and the file; values are parsed as
YAML scalars, never evaluated as code.

A config has four sections — ``env`` (data, universe, splits, features, reward, rules),
``algo`` (algorithm and hyperparameters), ``training`` (evaluation, checkpoints, stopping,
output) and ``mlflow`` — plus ``name`` and ``seed``. See ``configs/*.yaml``.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PydanticUserError,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from marketarena.envs.errors import ConfigError, MissingFileError
from marketarena.envs.settings import EnvSettings, check_settings, file_fields
from marketarena.envs.splits import iso_date
from marketarena.envs.tasks import get_task, is_task_id

ALGORITHMS = ("ppo", "a2c", "sac", "td3", "recurrent_ppo")
ON_POLICY = ("ppo", "a2c", "recurrent_ppo")
#: recurrent_ppo's policy (sb3-contrib's LSTM actor-critic for flat observations)
LSTM_POLICY = "MlpLstmPolicy"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(_Strict):
    """Chronological splits: train before ``validation_start``, validation until
    ``test_start``, test from ``test_start`` to ``end``. The test range is never used by
    training or tuning. Each date is a ``YYYY-MM-DD`` string; a date YAML reads unquoted (a
    ``datetime.date``, as from ``--set env.splits.test_start=2018-01-02``) is taken as it."""

    start: str | None = None
    validation_start: str = "2015-01-02"
    test_start: str = "2018-01-02"
    end: str | None = None

    @field_validator("start", "validation_start", "test_start", "end", mode="before")
    @classmethod
    def _a_date(cls, value: Any) -> Any:
        if value is None:
            return None
        try:
            return iso_date(value)
        except ConfigError:
            raise ValueError("not a date: write it as YYYY-MM-DD") from None

    @model_validator(mode="after")
    def _ordered(self) -> SplitConfig:
        given = (self.start, self.validation_start, self.test_start, self.end)
        dates = [dt.date.fromisoformat(d) for d in given if d]
        if dates != sorted(dates):
            raise ValueError(
                "split dates must increase: start < validation_start < test_start < end"
            )
        return self


#: settings a config's ``env`` leaves to each split: the split's dates
SPLIT_SETTINGS = ("start", "end")
#: the env settings a config's ``env`` holds: every :class:`EnvSettings` field but the dates
ENV_SETTINGS = tuple(f.name for f in file_fields() if f.name not in SPLIT_SETTINGS)


class _EnvSource(_Strict):
    data: str = "sp500_20"
    universe: tuple[str, ...] | None = None
    splits: SplitConfig = SplitConfig()


def _setting_field(name: str) -> tuple[Any, Any]:
    f = next(f for f in file_fields() if f.name == name)
    bounds: dict[str, Any] = dict(f.bounds)  # ge, gt, lt: Field's own keyword arguments
    if f.default_factory is not None:
        return f.type, Field(default_factory=f.default_factory, **bounds)
    return f.type, Field(f.default, **bounds)


if TYPE_CHECKING:

    class _EnvFields(_EnvSource):
        # the settings' fields exist only at run time, so a type checker sees them as Any
        def __getattr__(self, name: str) -> Any: ...

else:
    # the settings' fields, with their types, defaults and bounds, after data, universe and
    # splits
    _EnvFields = create_model(
        "_EnvFields", __base__=_EnvSource, **{name: _setting_field(name) for name in ENV_SETTINGS}
    )


class EnvConfig(_EnvFields):
    """The environment every split is built from: ``data`` (a dataset name, path or task id),
    ``universe`` (symbols to keep), ``splits``, and every env setting but the dates — each
    field of :class:`~marketarena.envs.settings.EnvSettings`, with its default and bounds
    (``reward`` by name; ``rules`` as a dict of :class:`TradingRules` fields, optionally with
    ``preset``). :meth:`to_settings` gives the env's settings; each split adds its dates."""

    @model_validator(mode="before")
    @classmethod
    def _task_splits(cls, values: Any) -> Any:
        """A diagnostic task has fixed splits (so nobody tunes on its test split): they are
        filled in, and splits that differ from them are an error."""
        data = values.get("data") if isinstance(values, dict) else None
        if not (isinstance(data, str) and is_task_id(data)):
            return values
        task = get_task(data)  # an unknown id lists the tasks
        validation_start, test_start = task.split_starts()
        fixed = {"validation_start": validation_start, "test_start": test_start}
        given = values.get("splits")
        if given is not None:
            given = given.model_dump() if isinstance(given, BaseModel) else dict(given)
            given = {
                k: iso_date(v) if isinstance(v, dt.date) else v
                for k, v in given.items()
                if v is not None
            }
            if given != fixed:
                raise ValueError(
                    f"{task.env_id} has fixed splits {fixed}; remove env.splits ({given})"
                )
        return {**values, "splits": fixed}

    @field_validator(*ENV_SETTINGS)
    @classmethod
    def _setting_is_valid(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is not None:  # always, for a field validator
            check_settings(**{info.field_name: value})  # e.g. unknown trading rules, naming them
        return value

    @model_validator(mode="after")
    def _settings_agree(self) -> EnvConfig:
        self.to_settings()  # the checks between settings: a reward and its arguments, ...
        return self

    def to_settings(self) -> EnvSettings:
        """The env's settings; ``start`` and ``end`` are left to each split."""
        return EnvSettings(**{name: getattr(self, name) for name in ENV_SETTINGS})


class NormalizeConfig(_Strict):
    """SB3 ``VecNormalize``: running statistics, saved with the model."""

    observations: bool = True
    rewards: bool = False
    clip_obs: float = 10.0


class AlgoConfig(_Strict):
    """The SB3 algorithm. ``hyperparameters`` go to its constructor as keyword arguments."""

    name: Literal["ppo", "a2c", "sac", "td3", "recurrent_ppo"] = "ppo"
    total_timesteps: int = Field(100_000, ge=1)
    n_envs: int = Field(8, ge=1)
    # or AssetwisePolicy (ppo, a2c): one network for every asset; recurrent_ppo defaults to
    # MlpLstmPolicy (policy_kwargs: lstm_hidden_size, n_lstm_layers, shared_lstm, ...)
    policy: str = "MlpPolicy"
    policy_kwargs: dict[str, Any] = Field(default_factory=dict)  # e.g. log_std_init
    net_arch: tuple[int, ...] = (64, 64)
    activation: Literal["tanh", "relu"] = "tanh"
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    normalize: NormalizeConfig = NormalizeConfig()
    torch_threads: int = Field(1, ge=1)
    device: str = "cpu"

    @field_validator("hyperparameters")
    @classmethod
    def _hyperparameters_belong(
        cls, hyperparameters: dict[str, Any], info: ValidationInfo
    ) -> dict[str, Any]:
        # a field validator (``name`` is validated first), so errors name algo.hyperparameters
        import inspect

        from marketarena.agents.sb3_agent import algorithm_class

        name = info.data.get("name")
        if name is None:  # an invalid algo.name is reported on its own
            return hyperparameters
        algorithm = algorithm_class(name)
        accepted = set(inspect.signature(algorithm.__init__).parameters)
        reserved = {"policy", "env", "seed", "device", "policy_kwargs", "verbose"}
        unknown = sorted(set(hyperparameters) - (accepted - reserved))
        if unknown:
            raise ValueError(
                f"{name} has no hyperparameter(s) {unknown}; accepted: "
                f"{sorted(accepted - reserved - {'self', 'kwargs'})}"
            )
        return {
            key: _hyperparameter(algorithm, name, key, value)
            for key, value in hyperparameters.items()
        }

    @model_validator(mode="before")
    @classmethod
    def _recurrent_default_policy(cls, values: Any) -> Any:
        """recurrent_ppo without a policy gets its LSTM policy, not MlpPolicy."""
        recurrent = isinstance(values, dict) and values.get("name") == "recurrent_ppo"
        if recurrent and "policy" not in values:
            return {**values, "policy": LSTM_POLICY}
        return values

    @model_validator(mode="after")
    def _policy_fits(self) -> AlgoConfig:
        from marketarena.agents.policies import POLICIES

        recurrent = self.name == "recurrent_ppo"
        if recurrent and self.policy in POLICIES:
            raise ValueError(
                f"policy {self.policy} does not support recurrent_ppo (it has no LSTM): use "
                f"{LSTM_POLICY} (the default), or {self.policy} with algo.name ppo or a2c"
            )
        if recurrent and self.policy != LSTM_POLICY:
            raise ValueError(
                f"recurrent_ppo needs policy {LSTM_POLICY} (the default when algo.policy is not "
                f"given), not {self.policy}"
            )
        if not recurrent and "Lstm" in self.policy:
            raise ValueError(f"policy {self.policy} needs algo.name recurrent_ppo, not {self.name}")
        if self.policy in POLICIES and self.name not in ON_POLICY:
            raise ValueError(f"policy {self.policy} needs algo.name ppo or a2c, not {self.name}")
        return self


def _hyperparameter(algorithm: Any, name: str, key: str, value: Any) -> Any:
    """``value`` as the type ``algorithm``'s constructor declares for ``key``
    (``learning_rate: float | Schedule``, ``n_steps: int``, ...), so that a value of the wrong
    type fails when the config loads rather than minutes into training. YAML's ``3e-4`` (a
    string: YAML 1.1 wants ``3.0e-4``) becomes the number it means; a declared type that only
    a type checker resolves is not checked."""
    init = algorithm.__init__
    declared = init.__annotations__.get(key)
    if declared is None:
        return value
    holder = type("_Annotations", (), {"__annotations__": {key: declared}})
    try:
        kind = typing.get_type_hints(holder, globalns=init.__globals__)[key]
        adapter = TypeAdapter(kind, config=ConfigDict(arbitrary_types_allowed=True))
    except (NameError, TypeError, PydanticUserError):  # left to SB3's own checks
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError:
        raise ValueError(f"{key}={value!r}: {name} expects {_type_name(kind)}") from None


def _type_name(kind: Any) -> str:
    """``float | Callable[[float], float]`` for a type, without module paths."""
    if isinstance(kind, type):
        return kind.__name__
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(kind))


#: what a curriculum stage may not change: the observation and the action the model is built for
STAGE_FIXED = ("window", "features", "universe", "action_mapping", "discrete_levels")


class CurriculumStage(_Strict):
    """``steps`` training steps on the run's env with ``env`` merged over it (e.g. lower
    costs, shorter episodes, another task with as many assets). See :class:`TrainingConfig`."""

    steps: int = Field(ge=1)
    env: dict[str, Any] = Field(default_factory=dict)


class TrainingConfig(_Strict):
    """Evaluation on the validation split, checkpoints, early stopping, output.

    ``curriculum``: stages trained in order before the run's own env, each for its ``steps``
    (rounded up to whole rollouts), e.g. from no costs towards the real ones::

        curriculum:
          - {steps: 100000, env: {rules: {commission_bps: 0, slippage_bps: 0}}}
          - {steps: 100000, env: {rules: {commission_bps: 2.5, slippage_bps: 2.5}}}

    A stage may change the data (with as many assets), rules, reward and episode length, not
    the observation or the action (:data:`STAGE_FIXED`). Validation, model selection and early
    stopping always use the run's own env, so a stage's model competes on the real task.
    """

    eval_every: int = Field(10_000, ge=1)
    checkpoint_every: int = Field(20_000, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)
    early_stopping_min_delta: float = 0.0
    selection_metric: Literal["sharpe", "sortino", "calmar", "total_return"] = "sharpe"
    output_dir: str = "runs"
    progress_bar: bool = True
    #: at the end, the best model against the baselines over the validation split, written to
    #: ``validation/`` (and MLflow): a backtest and a full report, seconds a run; off for
    #: bench runs and tuning trials, whose results are their own reports
    validation_report: bool = True
    curriculum: tuple[CurriculumStage, ...] = ()


class SearchParam(_Strict):
    """Narrow one tuned parameter: ``choices``, or a ``low``/``high`` range (``log`` scale)."""

    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SearchParam:
        ranged = self.low is not None or self.high is not None
        if self.choices is not None and ranged:
            raise ValueError("give choices or low/high, not both")
        if self.choices is None and not (self.low is not None and self.high is not None):
            raise ValueError("give choices, or both low and high")
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.choices is not None and not self.choices:
            raise ValueError("choices must not be empty")
        return self


class TuningConfig(_Strict):
    """Hyperparameter search with Optuna (see :mod:`marketarena.training.tune`).

    ``search`` narrows or fixes parameters of the algorithm's search space: a plain value
    fixes it, ``{choices: [...]}`` or ``{low: .., high: .., log: ..}`` narrows it.
    """

    study: str | None = None
    storage: str | None = None
    n_trials: int = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0)
    n_jobs: int = Field(1, ge=1)
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "halving", "none"] = "median"
    objective: Literal["sharpe", "sortino", "calmar", "total_return"] = "sharpe"
    seeds: tuple[int, ...] = (0,)
    folds: int = Field(1, ge=1)
    fold_validation_days: int = Field(252, ge=20)
    sampler_seed: int = 0
    heartbeat_interval: int = Field(10, ge=1)
    grace_period: int = Field(30, ge=2)
    search: dict[str, SearchParam | int | float | str | bool | list[Any]] = Field(
        default_factory=dict
    )
    retrain: bool = False


class MlflowConfig(_Strict):
    enabled: bool = True
    experiment: str = "marketarena-training"
    #: register the run's best model (its pyfunc model) under this name in the model
    #: registry, a new version per run, so ``models:/NAME/VERSION`` resolves; none: not
    #: registered (the model is still logged to the run, ``runs:/ID/model``)
    registered_model: str | None = None


class Config(_Strict):
    """A whole training run."""

    name: str = "run"
    seed: int = 0
    env: EnvConfig = EnvConfig()
    algo: AlgoConfig = AlgoConfig()
    training: TrainingConfig = TrainingConfig()
    mlflow: MlflowConfig = MlflowConfig()
    tuning: TuningConfig = TuningConfig()

    @model_validator(mode="after")
    def _compatible(self) -> Config:
        if self.env.action_mapping == "discrete" and self.algo.name not in ON_POLICY:
            raise ValueError(
                f"env.action_mapping 'discrete' needs algo.name ppo, a2c or recurrent_ppo; "
                f"{self.algo.name} needs continuous actions"
            )
        stages = self.training.curriculum
        staged = sum(stage.steps for stage in stages)
        if stages and staged >= self.algo.total_timesteps:
            raise ValueError(
                f"training.curriculum: its stages take {staged:,} steps, not fewer than "
                f"algo.total_timesteps ({self.algo.total_timesteps:,}); the run's own env "
                "needs some"
            )
        for i in range(len(stages)):
            self.stage_env(i)
        return self

    def stage_env(self, index: int) -> EnvConfig:
        """The env of curriculum stage ``index``: the run's env with the stage's merged in."""
        stage = self.training.curriculum[index]
        where = f"training.curriculum.{index}.env"
        try:
            env = EnvConfig.model_validate(merge(self.env.model_dump(), stage.env))
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
            raise ValueError(f"{where}.{key}: {msg}" if key else f"{where}: {msg}") from None
        changed = [k for k in STAGE_FIXED if getattr(env, k) != getattr(self.env, k)]
        if changed:
            raise ValueError(
                f"{where} changes {', '.join(changed)}: a stage may change the data (with as "
                "many assets), rules, reward and episode length, not the observation or the "
                "action the model is built for"
            )
        return env

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------- loading
class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, with dates left as the strings they are written as: the config
    checks them as dates itself, naming the key, where YAML would turn ``2018-01-02`` into a
    ``datetime.date`` and fail on ``2018-13-45`` with no key at all."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(text: str) -> Any:
    """A YAML document or scalar as a config reads it: safely (never as code), dates as
    strings."""
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: never constructs objects


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config in {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            # the input of a whole-config check is the whole config: not worth repeating
            got = f" (got {err.get('input')!r})" if err["loc"] else ""
            lines.append(f"  - {key}: {msg}{got}")
    return "\n".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a", "b", "c"], YAML-parsed value)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    try:
        value = read_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: cannot parse the value: {exc}") from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with every ``key.sub=value`` override applied."""
    out = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return out


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: ``update`` wins; nested sections merge key by key."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_config(data: Mapping[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults < the YAML file at ``path`` < ``extra`` (e.g. a tuning trial) < overrides."""
    data, source = read_config_file(path)
    if extra:
        data = merge(data, extra)
    if overrides:
        data = apply_overrides(data, overrides)
        source += " with overrides " + " ".join(overrides)
    return build_config(data, source)


def read_config_file(path: str | Path | None) -> tuple[dict[str, Any], str]:
    """The sections of the YAML config at ``path`` and its name for messages (``{}`` and
    ``"defaults"`` without a path); a missing file, bad YAML or a top level that is not a
    mapping is an error naming the file."""
    if path is None:
        return {}, "defaults"
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"config file not found: {path}")
    try:
        loaded = read_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return loaded, str(path)
