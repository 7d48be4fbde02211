"""Training configs: precedence, YAML-scalar overrides, shipped configs, errors that name the
key and the file, and the YAML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from marketarena.envs.settings import EnvSettings, setting_names
from marketarena.envs.simulator import RULE_PRESETS
from marketarena.training.config import Config, ConfigError, EnvConfig, load_config, merge

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SMOKE = ROOT / "configs" / "smoke.yaml"


def write(tmp_path: Path, data: dict | str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def smoke_with(tmp_path: Path, change: dict, name: str = "bad.yaml") -> Path:
    """configs/smoke.yaml with ``change`` deep-merged in (``algo.hyperparameters`` replaced
    whole), written to ``tmp_path/name``."""
    data = merge(yaml.safe_load(SMOKE.read_text()), change)
    if "hyperparameters" in change.get("algo", {}):
        data["algo"]["hyperparameters"] = change["algo"]["hyperparameters"]
    return write(tmp_path, data, name)


# ------------------------------------------------------------------------ precedence
def test_defaults_yaml_extra_overrides_precedence(tmp_path):
    path = write(
        tmp_path,
        {
            "seed": 1,  # YAML only
            "env": {"window": 10, "episode_length": 100},  # YAML, then extra / override
            "algo": {"n_envs": 2, "total_timesteps": 500},
        },
    )
    extra = {"env": {"episode_length": 120}, "algo": {"n_envs": 3, "total_timesteps": 600}}
    config = load_config(path, ["algo.total_timesteps=700", "training.eval_every=50"], extra)

    defaults = Config()
    assert config.algo.device == defaults.algo.device == "cpu"  # default, untouched
    assert config.training.checkpoint_every == defaults.training.checkpoint_every
    assert config.seed == 1 and config.env.window == 10  # YAML beats defaults
    assert config.env.episode_length == 120 and config.algo.n_envs == 3  # extra beats YAML
    assert config.algo.total_timesteps == 700  # overrides beat extra
    assert config.training.eval_every == 50  # overrides beat defaults
    # extra merges section by section: keys it does not name keep their YAML values
    assert config.algo.name == "ppo" and config.env.window == 10


def test_extra_and_overrides_without_a_file():
    config = load_config(None, ["seed=9"], {"seed": 3, "name": "from-extra"})
    assert (config.seed, config.name) == (9, "from-extra")
    assert load_config() == Config()


@pytest.mark.parametrize(
    ("override", "attribute", "expected"),
    [
        ("env.window=16", ("env", "window"), 16),
        (
            "training.early_stopping_min_delta=1.0e-3",
            ("training", "early_stopping_min_delta"),
            0.001,
        ),
        ("training.early_stopping_min_delta=2.5", ("training", "early_stopping_min_delta"), 2.5),
        ("algo.normalize.rewards=true", ("algo", "normalize", "rewards"), True),
        ("training.progress_bar=no", ("training", "progress_bar"), False),
        ("algo.net_arch=[8, 4]", ("algo", "net_arch"), (8, 4)),
        ("env.universe=[KO, XOM]", ("env", "universe"), ("KO", "XOM")),
        ("env.episode_length=null", ("env", "episode_length"), None),
        ("training.early_stopping_patience=~", ("training", "early_stopping_patience"), None),
        ("env.episode_length=", ("env", "episode_length"), None),
        (
            "algo.hyperparameters={n_steps: 32, gamma: 0.9}",
            ("algo", "hyperparameters"),
            {"n_steps": 32, "gamma": 0.9},
        ),
    ],
)
def test_overrides_are_yaml_scalars(override, attribute, expected):
    config = load_config(SMOKE, [override])
    value = config
    for part in attribute:
        value = getattr(value, part)
    assert value == expected
    assert type(value) is type(expected)


def test_override_types_are_checked():
    # YAML reads 0001 as an int; a str field does not silently accept it
    with pytest.raises(ConfigError, match=r"name"):
        load_config(SMOKE, ["name=0001"])
    assert load_config(SMOKE, ["name='0001'"]).name == "0001"
    with pytest.raises(ConfigError, match=r"env\.window"):
        load_config(SMOKE, ["env.window=eight"])


@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os')",
        "__import__('os').system('touch pwned')",
        "!!python/object/apply:os.getcwd []",
    ],
)
def test_override_values_are_never_evaluated(tmp_path, monkeypatch, payload):
    monkeypatch.chdir(tmp_path)
    try:
        config = load_config(SMOKE, [f"name={payload}"])
    except ConfigError as exc:  # a python tag: refused by the YAML safe loader
        assert "name=" in str(exc)
    else:
        assert config.name == payload  # stays the string it was
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ConfigError) as info:
        load_config(SMOKE, [f"algo.name={payload}"])
    assert "algo.name" in str(info.value)
    if not payload.startswith("!!"):  # parsed as a string, then refused by validation
        assert str(SMOKE) in str(info.value)
        assert repr(payload) in str(info.value) or payload in str(info.value)


def test_yaml_file_is_never_evaluated(tmp_path):
    path = write(tmp_path, "name: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


# ----------------------------------------------------------------- shipped configs
def test_there_are_shipped_configs():
    assert {"smoke.yaml", "ppo.yaml", "sac.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_config(path)
    raw = yaml.safe_load(path.read_text())
    assert config.name == raw["name"]
    assert config.algo.name == raw["algo"]["name"]
    # the file's own values win over the defaults
    assert config.algo.total_timesteps == raw["algo"]["total_timesteps"]
    assert dict(config.algo.hyperparameters) == raw["algo"].get("hyperparameters", {})


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_to_yaml_round_trips(tmp_path, path):
    penalty = "env.reward_kwargs={turnover_penalty: 2}"
    config = load_config(path, ["env.rules.commission_bps=2.5", penalty])
    dumped = write(tmp_path, config.to_yaml(), "dumped.yaml")
    again = load_config(dumped)
    assert again == config
    assert again.to_yaml() == config.to_yaml()
    # and it is a real change from the defaults, not two default configs compared
    assert again.env.rules["commission_bps"] == 2.5
    assert again.env.reward_kwargs == {"turnover_penalty": 2.0}
    assert again != Config()


# -------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("change", "key", "hint"),
    [
        ({"bogus": 1}, "bogus", "unknown key"),
        ({"env": {"windw": 8}}, "env.windw", "unknown key"),
        ({"training": {"eval_evry": 8}}, "training.eval_evry", "unknown key"),
        ({"env": {"window": 0}}, "env.window", "greater than or equal to 1"),
        ({"algo": {"name": "dqn"}}, "algo.name", "dqn"),
        ({"algo": {"total_timesteps": "many"}}, "algo.total_timesteps", "many"),
        ({"env": {"rules": {"comission_bps": 5}}}, "env.rules", "comission_bps"),
        ({"env": {"rules": {"commission_bps": -1}}}, "env.rules", "commission_bps"),
        (
            {"algo": {"name": "sac", "hyperparameters": {"clip_range": 0.2}}},
            "algo.hyperparameters",
            "clip_range",
        ),
        (
            {"algo": {"name": "a2c", "hyperparameters": {"n_epochs": 3}}},
            "algo.hyperparameters",
            "n_epochs",
        ),
        ({"env": {"splits": {"validation_start": "2017-01-03"}}}, "env.splits", "increase"),
        ({"env": {"splits": {"end": "2012-01-03"}}}, "env.splits", "increase"),
        (
            {"env": {"action_mapping": "discrete"}, "algo": {"name": "sac", "hyperparameters": {}}},
            "env.action_mapping",
            "sac",
        ),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path, change, key, hint):
    path = smoke_with(tmp_path, change)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert key in message
    assert hint in message
    assert str(path) in message


def test_overrides_errors_name_the_key_and_the_override(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(SMOKE, ["env.windw=8"])
    message = str(info.value)
    assert "env.windw" in message and str(SMOKE) in message and "env.windw=8" in message


def test_sac_accepts_its_own_hyperparameters():
    # the check is per algorithm, not a global list: what sac refuses above is not a typo
    config = load_config(SMOKE, ["algo.name=sac", "algo.hyperparameters={learning_starts: 10}"])
    assert config.algo.hyperparameters == {"learning_starts": 10}
    with pytest.raises(ConfigError, match="learning_starts"):
        load_config(SMOKE, ["algo.hyperparameters={learning_starts: 10}"])  # ppo


def test_discrete_is_fine_with_on_policy_algorithms():
    for algo, hyper in (("ppo", "{n_steps: 16}"), ("a2c", "{n_steps: 16}")):
        config = load_config(
            SMOKE,
            [f"algo.name={algo}", f"algo.hyperparameters={hyper}", "env.action_mapping=discrete"],
        )
        assert config.env.action_mapping == "discrete"


def test_malformed_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "env: {window: [8\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "YAML" in str(info.value)


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_empty_file_is_the_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == Config()


def test_missing_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError) as info:
        load_config(missing)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("item", ["foo", "=3", " =3", "env.window=[8"])
def test_malformed_override(item):
    with pytest.raises(ConfigError) as info:
        load_config(SMOKE, [item])
    assert repr(item) in str(info.value)


def test_override_into_a_non_section():
    with pytest.raises(ConfigError, match="seed is not a section"):
        load_config(SMOKE, ["seed.x=1"])


# ------------------------------------------------------------------ diagnostic tasks
BENCH_PPO = ROOT / "configs" / "bench" / "ppo.yaml"


def test_a_task_id_as_data_brings_the_tasks_fixed_splits():
    from marketarena.envs import get_task
    from marketarena.training.train import load_universe, split_ranges

    config = load_config(BENCH_PPO, ["env.data=marketarena/LeadLag-v0"])
    task = get_task("LeadLag")
    assert (config.env.splits.validation_start, config.env.splits.test_start) == (
        task.split_starts()
    )
    ranges = split_ranges(config, load_universe(config))
    assert ranges == task.splits()


def test_splits_that_differ_from_a_tasks_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"env: marketarena/Momentum-v0 has fixed splits"):
        load_config(SMOKE, ["env.data=marketarena/Momentum-v0", "env.universe=null"])
    # giving the task's own splits is fine
    config = load_config(BENCH_PPO, ["env.data=marketarena/Momentum-v0"])
    again = config.to_dict()
    assert load_config(write(tmp_path, again)).env.splits == config.env.splits


def test_an_unknown_task_id_lists_the_tasks():
    with pytest.raises(ConfigError, match=r"unknown task .*marketarena/Noise-v0"):
        load_config(BENCH_PPO, ["env.data=marketarena/Nosie-v0"])


def test_tuning_folds_on_a_task_end_before_its_test_split():
    from marketarena.envs import get_task
    from marketarena.training.tune import fold_splits

    config = load_config(
        BENCH_PPO, ["env.data=marketarena/Noise-v0", "tuning.folds=3", "tuning.objective=sharpe"]
    )
    folds = fold_splits(config)
    assert len(folds) == 3
    test_start = get_task("Noise").split_starts()[1]
    assert all(f["end"] <= test_start for f in folds)


def test_the_assetwise_policy_is_for_on_policy_algorithms():
    with pytest.raises(ConfigError, match=r"AssetwisePolicy needs algo\.name ppo or a2c"):
        load_config(
            BENCH_PPO, ["env.data=marketarena/Noise-v0", "algo.name=sac", "algo.hyperparameters={}"]
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["env.reward=log_return", "env.reward_kwargs={scale: 2}"],
            "reward 'log_return': unknown argument(s) ['scale']",
        ),
        (
            ["env.reward=differential_sharpe", "env.reward_kwargs={etta: 0.1}"],
            "it takes eta, warmup, var_floor, turnover_penalty",
        ),
        (["env.reward_kwargs={turnover_penalty: -1}"], "turnover_penalty must be >= 0"),
        (["env.reward=sharpe"], "unknown reward 'sharpe'"),
    ],
)
def test_reward_and_its_arguments_are_checked_on_load(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS[0], overrides)
    assert "env" in str(info.value) and message in str(info.value)


# ---------------------------------------------------------------------- env settings
def test_the_env_section_is_the_env_settings():
    """Every env setting but the dates (each split gives them) is a key of ``env``, with the
    settings' own default; data, universe and splits are the config's."""
    dates = {"start", "end"}
    assert set(EnvConfig.model_fields) == {"data", "universe", "splits"} | (
        set(setting_names()) - dates
    )
    assert EnvConfig().to_settings() == EnvSettings()
    config = load_config(SMOKE, ["env.rules={preset: aitrader}", "env.rebalance_band=0.05"])
    settings = config.env.to_settings()
    assert (settings.window, settings.episode_length) == (config.env.window, 64)
    assert settings.rules == RULE_PRESETS["aitrader"] and settings.rebalance_band == 0.05
    assert (settings.start, settings.end) == (None, None)


def test_every_shipped_config_names_its_action_mapping():
    # the env's default mapping is normalize; the shipped RL configs train with softmax (or
    # discrete) and say so, so no run depends on which default a mapping falls back to
    for path in [*CONFIGS, *sorted((ROOT / "configs" / "bench").glob("*.yaml"))]:
        raw = yaml.safe_load(path.read_text())
        assert "action_mapping" in raw["env"], path


def test_checks_between_settings_run_on_load():
    with pytest.raises(ConfigError, match=r"env: action_mapping='signed' needs rules\.allow_short"):
        load_config(SMOKE, ["env.action_mapping=signed"])
    config = load_config(SMOKE, ["env.action_mapping=signed", "env.rules={allow_short: true}"])
    assert config.env.to_settings().rules.allow_short


# --------------------------------------------------------------- hyperparameter types
@pytest.mark.parametrize(
    ("algo", "hyperparameters", "message"),
    [
        ("ppo", "{learning_rate: abc}", "learning_rate='abc': ppo expects float | Callable"),
        ("ppo", "{n_steps: 1.5}", "n_steps=1.5: ppo expects int"),
        ("a2c", "{normalize_advantage: maybe}", "normalize_advantage='maybe': a2c expects bool"),
        ("sac", "{buffer_size: [1000]}", "buffer_size=[1000]: sac expects int"),
        ("td3", "{action_noise: normal}", "action_noise='normal': td3 expects ActionNoise | None"),
    ],
)
def test_a_hyperparameter_of_the_wrong_type_fails_on_load(algo, hyperparameters, message):
    """Before any data, env or model: ``learning_rate: abc`` used to fail in training."""
    with pytest.raises(ConfigError) as info:
        load_config(SMOKE, [f"algo.name={algo}", f"algo.hyperparameters={hyperparameters}"])
    assert "algo.hyperparameters: " + message in str(info.value)


def test_hyperparameters_take_the_types_the_algorithm_declares():
    given = "{learning_rate: 3e-4, train_freq: [1, episode], gamma: 1, learning_starts: 10}"
    config = load_config(SMOKE, ["algo.name=sac", f"algo.hyperparameters={given}"])
    # YAML 1.1 reads 3e-4 (no dot) as a string: it is the number it means
    assert config.algo.hyperparameters == {
        "learning_rate": 0.0003,
        "train_freq": (1, "episode"),
        "gamma": 1.0,
        "learning_starts": 10,
    }
    config = load_config(SMOKE, ["algo.hyperparameters={target_kl: null}"])
    assert config.algo.hyperparameters == {"target_kl": None}


# --------------------------------------------------------------------- split dates
SMOKE_TEST_START = 'test_start: "2016-01-04"'


def smoke_text_with(tmp_path: Path, test_start: str) -> Path:
    """configs/smoke.yaml with ``test_start`` written as given (unquoted: YAML's date)."""
    text = SMOKE.read_text()
    assert SMOKE_TEST_START in text
    return write(tmp_path, text.replace(SMOKE_TEST_START, f"test_start: {test_start}"))


@pytest.mark.parametrize("date", ["2011-11-28", "'2011-11-28'", "20111128"])
def test_split_dates_on_the_command_line_as_written(date):
    """``--set env.splits.validation_start=2011-11-28``, as the README writes overrides."""
    config = load_config(SMOKE, [f"env.splits.validation_start={date}"])
    assert config.env.splits.validation_start == "2011-11-28"


def test_split_dates_in_a_yaml_file_unquoted_or_as_date_objects(tmp_path):
    assert load_config(smoke_text_with(tmp_path, "2016-01-05")).env.splits.test_start == (
        "2016-01-05"
    )
    # a config built in code may hold datetime.date values (as yaml.safe_load makes them)
    import datetime as dt

    from marketarena.training.config import build_config

    config = build_config({"env": {"splits": {"validation_start": dt.date(2006, 11, 27)}}})
    assert config.env.splits.validation_start == "2006-11-27"
    assert yaml.safe_load(config.to_yaml())["env"]["splits"]["validation_start"] == "2006-11-27"


@pytest.mark.parametrize("date", ["2018-13-45", "13/01/2018", "soon"])
def test_a_split_date_that_is_no_date_is_named(tmp_path, date):
    with pytest.raises(ConfigError) as info:
        load_config(SMOKE, [f"env.splits.test_start={date}"])
    assert "env.splits.test_start: not a date: write it as YYYY-MM-DD" in str(info.value)
    path = smoke_text_with(tmp_path, date)
    with pytest.raises(ConfigError, match=r"env\.splits\.test_start: not a date") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_split_dates_are_ordered_as_dates_not_as_strings():
    # as strings "2009-12-31" < "20091201"; as dates 2009-12-31 is after 2009-12-01
    with pytest.raises(ConfigError, match="split dates must increase"):
        load_config(
            SMOKE, ["env.splits.start=2009-12-31", "env.splits.validation_start='20091201'"]
        )


def test_a_new_env_setting_needs_no_config_change():
    """reward_scale was declared in envs/settings.py only: configs take, check and pass it."""
    config = load_config(SMOKE, ["env.reward_scale=50"])
    assert config.env.to_settings().reward_scale == 50.0
    assert load_config(SMOKE).env.to_settings().reward_scale == 1.0
    with pytest.raises(ConfigError, match="reward_scale"):
        load_config(SMOKE, ["env.reward_scale=-1"])


@pytest.mark.parametrize(
    ("rule", "needed"),
    [
        ("{lot_size: abc}", "lot_size takes a number or null"),
        ("{max_weight: [1, 2]}", "max_weight takes a number or null"),
        ("{allow_short: maybe}", "allow_short takes true or false"),
    ],
)
def test_a_trading_rule_of_the_wrong_type_is_named_on_load(rule, needed):
    with pytest.raises(ConfigError, match="rules") as info:
        load_config(SMOKE, [f"env.rules={rule}"])
    assert needed in str(info.value)


def test_risk_rules_from_yaml_and_overrides(tmp_path):
    path = write(tmp_path, {"env": {"risk": {"max_weight": 0.1, "drawdown_derisk": {0.1: 0.5}}}})
    settings = load_config(path, ["env.risk.stop_loss=0.2"]).env.to_settings()
    assert settings.risk.max_weight == 0.1 and settings.risk.stop_loss == 0.2
    assert settings.risk.drawdown_derisk == {0.1: 0.5}
    with pytest.raises(ConfigError, match=r"bad\.yaml(.|\n)*env\.risk: unknown risk rule"):
        load_config(smoke_with(tmp_path, {"env": {"risk": {"max_wieght": 0.1}}}))
    with pytest.raises(ConfigError, match=r"risk\.max_net=-0\.1"):
        load_config(smoke_with(tmp_path, {"env": {"risk": {"max_net": -0.1}}}))
