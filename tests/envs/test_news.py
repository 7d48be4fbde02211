"""News events: loading, alignment to session closes, features, lexicon, cache, headlines."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from marketarena.agents.llm_agent import LLMAgent, LLMConfig
from marketarena.envs.data import MarketData
from marketarena.envs.errors import ConfigError, DataError, MissingFileError, UnknownNameError
from marketarena.envs.features import compute_features
from marketarena.envs.news import (
    LexiconScorer,
    NewsEvents,
    NewsWarning,
    align_news,
    item_scores,
    latest_headlines,
    load_news,
    news_features,
    session_closes,
    with_news,
)
from marketarena.envs.portfolio_env import PortfolioEnv

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "altdata"
# NYSE sessions around Thanksgiving 2019: 11-28 closed, 11-29 closed early at 13:00 New York
SESSIONS = ["2019-11-25", "2019-11-26", "2019-11-27", "2019-11-29", "2019-12-02", "2019-12-03"]
DECAY = 0.5 ** (1 / 5)  # the default half-life, 5 sessions


def panel(dates: Sequence[str] = SESSIONS, symbols: tuple[str, ...] = ("AAA", "BBB")) -> MarketData:
    days = np.asarray(dates, dtype="datetime64[D]")
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (len(days), len(symbols))), axis=0))
    return MarketData(dates=days, symbols=symbols, close=close, name="thanksgiving")


def write_csv(path: Path, rows: Sequence[Sequence[str]], header: str = "") -> Path:
    header = header or "published_at,symbol,headline,score,event"
    path.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n")
    return path


def utc(text: str) -> np.datetime64:
    return pd.Timestamp(text).tz_convert("UTC").tz_localize(None).as_unit("ns").to_datetime64()


@pytest.fixture
def events() -> NewsEvents:
    return load_news(FIXTURES / "news.csv")


def test_csv_and_jsonl_load_the_same_items_sorted_in_utc(events: NewsEvents) -> None:
    other = load_news(FIXTURES / "news.jsonl")
    assert len(events) == 8
    np.testing.assert_array_equal(events.published_at, other.published_at)
    assert events.symbols == other.symbols and events.headlines == other.headlines
    assert events.kinds == other.kinds and events.bodies == other.bodies
    np.testing.assert_array_equal(events.scores, other.scores)  # NaN where none given
    assert events.published_at[1] == utc("2019-11-25T20:59Z")  # 15:59 EST is 20:59 UTC
    assert np.isnan(events.scores[1]) and events.scores[5] == 0.4
    assert events.event_kinds == ("earnings", "mna")
    assert events.where(0) == f"{FIXTURES / 'news.csv'}:2"


def test_session_closes_come_from_the_calendar_with_early_closes_and_a_fixed_fallback() -> None:
    days = ["2019-11-27", "2019-11-28", "2019-11-29", "2019-07-03", "2019-07-05"]
    closes = session_closes(days)
    expected = [
        "2019-11-27T21:00",  # 16:00 EST
        "2019-11-28T21:00",  # Thanksgiving: not a session, the fixed 16:00 New York
        "2019-11-29T18:00",  # the early close, 13:00 EST
        "2019-07-03T17:00",  # early close in summer time, 13:00 EDT
        "2019-07-05T20:00",  # 16:00 EDT
    ]
    np.testing.assert_array_equal(closes, np.asarray(expected, dtype="datetime64[ns]"))
    fixed = session_closes(days, calendar=None)
    assert fixed[2] == np.datetime64("2019-11-29T21:00", "ns")  # no early close without one
    assert fixed[3] == np.datetime64("2019-07-03T20:00", "ns")


def test_items_land_on_the_session_whose_close_they_precede(events: NewsEvents) -> None:
    with pytest.warns(NewsWarning, match=r"symbols not in thanksgiving.*ZZZ \(1\)"):
        alignment = align_news(panel(), events)
    # sorted items: 11-22 15:00 (before the first window), 11-25 15:59 (row 0, before the
    # 16:00 close), 11-25 16:01 (row 1), ZZZ, 11-29 12:59 (row 3, before the 13:00 early
    # close), 11-29 13:01 (row 4, Monday), Saturday 11-30 (Monday), 12-02 15:00 (Monday)
    np.testing.assert_array_equal(alignment.rows, [-1, 0, 1, 1, 3, 4, 4, 4])
    np.testing.assert_array_equal(alignment.columns, [0, 0, 0, -1, 1, 1, 0, 0])
    assert alignment.before_first == 1 and alignment.after_last == 0
    assert alignment.unknown_symbols == {"ZZZ": 1}
    assert alignment.used.sum() == 6


def test_counts_sentiment_with_decay_and_event_flags_by_hand(events: NewsEvents) -> None:
    with pytest.warns(NewsWarning):
        f = news_features(panel(), events)
    assert list(f) == ["news_count", "sentiment", "event_earnings", "event_mna"]
    np.testing.assert_array_equal(f["news_count"][:, 0], [1, 1, 0, 0, 2, 0])
    np.testing.assert_array_equal(f["news_count"][:, 1], [0, 0, 0, 1, 1, 0])
    # AAA: beats+raises (+1); lawsuit+recall (-1); decay; downgraded (-1) with surge+buyback
    # (+1) on Monday: mean 0
    aaa = [1.0, -1.0, -DECAY, -(DECAY**2), 0.0, 0.0]
    # BBB: nothing (0); "did not miss" (+1) before the early close; the given 0.4 on Monday
    bbb = [0.0, 0.0, 0.0, 1.0, 0.4, 0.4 * DECAY]
    np.testing.assert_allclose(f["sentiment"][:, 0], aaa, rtol=0, atol=1e-15)
    np.testing.assert_allclose(f["sentiment"][:, 1], bbb, rtol=0, atol=1e-15)
    expected_earnings = np.zeros((6, 2))
    expected_earnings[0, 0] = 1
    expected_mna = np.zeros((6, 2))
    expected_mna[4, 1] = 1
    np.testing.assert_array_equal(f["event_earnings"], expected_earnings)
    np.testing.assert_array_equal(f["event_mna"], expected_mna)


def test_half_life_and_chosen_event_kinds(events: NewsEvents) -> None:
    with pytest.warns(NewsWarning):
        f = news_features(panel(), events, half_life=1.0, event_kinds=["mna", "guidance"])
    np.testing.assert_allclose(f["sentiment"][1:4, 0], [-1.0, -0.5, -0.25])
    assert list(f)[2:] == ["event_mna", "event_guidance"]
    assert not f["event_guidance"].any()
    with pytest.raises(ConfigError, match="half_life"):
        news_features(panel(), events, half_life=0)


@pytest.mark.parametrize(
    ("headline", "score"),
    [
        ("AAA beats estimates, raises guidance", 1.0),
        ("AAA faces lawsuit over recall", -1.0),
        ("BBB did not miss forecasts", 1.0),  # a negated negative word
        ("BBB didn't beat estimates", -1.0),  # n't negates too
        ("Shares surge as sales beat; margins fall", 1 / 3),  # (2 - 1) / 3
        ("No recall planned, company says", 1.0),  # "no" within three words of "recall"
        ("CEO speaks at a conference", 0.0),  # no lexicon word
    ],
)
def test_lexicon_scores_headlines(headline: str, score: float) -> None:
    assert LexiconScorer().score([headline])[0] == pytest.approx(score)


class CountingScorer(LexiconScorer):
    """The lexicon, recording what it was asked to score."""

    name = "counting"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def score(self, texts: Sequence[str]) -> np.ndarray:
        self.asked.extend(texts)
        return super().score(texts)


def test_scores_are_cached_by_file_scorer_and_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKETARENA_CACHE_DIR", str(tmp_path / "cache"))
    events = load_news(FIXTURES / "news.csv")
    scorer = CountingScorer()
    first, hit = item_scores(events, scorer)
    assert not hit
    # the given score (0.4) is used as given, never scored
    assert len(scorer.asked) == 7 and "BBB to acquire CCC in all-stock deal" not in scorer.asked
    again, hit = item_scores(events, scorer)
    assert hit and len(scorer.asked) == 7  # from the cache: the scorer was not called
    np.testing.assert_array_equal(first, again)
    assert first[5] == 0.4 and first[1] == 1.0 and first[2] == -1.0
    _, hit = item_scores(events, LexiconScorer())  # another scorer: a miss
    assert not hit
    changed = tmp_path / "news.csv"
    changed.write_text((FIXTURES / "news.csv").read_text().replace("new plant", "new factory"))
    _, hit = item_scores(load_news(changed), scorer)  # another file: a miss
    assert not hit and len(scorer.asked) == 14


def test_a_scorer_out_of_range_is_an_error(events: NewsEvents) -> None:
    class Broken(LexiconScorer):
        name = "broken"

        def score(self, texts: Sequence[str]) -> np.ndarray:
            return np.full(len(texts), 2.0)

    with pytest.raises(ConfigError, match=r"scorer 'broken' must return 7 scores in \[-1, 1\]"):
        item_scores(events, Broken())


def test_with_news_adds_feature_columns_an_env_uses_by_name(events: NewsEvents) -> None:
    dates = pd.bdate_range("2019-11-18", "2019-12-20")
    dates = dates[dates != "2019-11-28"].to_numpy().astype("datetime64[D]")
    with pytest.warns(NewsWarning):
        data = with_news(panel(dates), events)
    assert data.feature_names == ("news_count", "sentiment", "event_earnings", "event_mna")
    assert data.notes[-1].startswith("news: 7 of 8 items from ")
    assert "1 for symbols not in the panel ignored (ZZZ: 1)" in data.notes[-1]
    stacked, first = compute_features(data, ["log_return", "sentiment"])
    row = int(np.flatnonzero(data.dates == np.datetime64("2019-11-25"))[0])
    assert stacked[row, 0, 1] == 1.0 and first == 1
    env = PortfolioEnv(data, features=("log_return", "sentiment"), window=3, episode_length=None)
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape
    with pytest.raises(ConfigError, match="already has feature"), pytest.warns(NewsWarning):
        with_news(data, events)  # the same columns twice clash


def _random_news(rng: np.random.Generator, n: int, first: str, last: str) -> list[list[str]]:
    lo, hi = pd.Timestamp(first, tz="UTC"), pd.Timestamp(last, tz="UTC")
    words = ["beats", "misses", "surge", "plunge", "recall", "upgrade", "steady", "not"]
    rows = []
    for _ in range(n):
        stamp = lo + (hi - lo) * rng.random()
        headline = " ".join(rng.choice(words, size=3))
        score = f"{rng.uniform(-1, 1):.3f}" if rng.random() < 0.3 else ""
        kind = str(rng.choice(["", "", "earnings", "mna"]))
        rows.append([stamp.isoformat(), str(rng.choice(["AAA", "BBB"])), headline, score, kind])
    return rows


def test_perturbing_news_after_a_close_leaves_every_earlier_row_unchanged(
    tmp_path: Path,
) -> None:
    dates = pd.bdate_range("2019-11-01", "2019-12-31")
    dates = dates[~dates.isin(["2019-11-28", "2019-12-25"])].to_numpy().astype("datetime64[D]")
    data = panel(dates)
    closes = session_closes(data.dates)
    rng = np.random.default_rng(7)
    base = _random_news(rng, 120, "2019-10-30", "2019-12-31T20:00")
    original = news_features(data, load_news(write_csv(tmp_path / "base.csv", base)))
    for t in (0, 9, 17, 26, len(dates) - 2):
        cutoff = pd.Timestamp(closes[t], tz="UTC")
        perturbed = [r for r in base if pd.Timestamp(r[0]) <= cutoff]
        later = [r for r in base if pd.Timestamp(r[0]) > cutoff]
        for r in later:  # every later item altered: text, score, kind; and more of them
            perturbed.append([r[0], r[1], "record surge upgrade", "-0.9", "guidance"])
        perturbed += _random_news(rng, 30, str(cutoff + pd.Timedelta(seconds=1)), "2019-12-31")
        perturbed.append([(cutoff + pd.Timedelta(microseconds=1)).isoformat(), "AAA", "x", "", ""])
        path = write_csv(tmp_path / f"perturbed_{t}.csv", perturbed)
        features = news_features(data, load_news(path))
        for name, values in original.items():
            np.testing.assert_array_equal(features[name][: t + 1], values[: t + 1], err_msg=name)
        assert not np.array_equal(features["sentiment"][t + 1 :], original["sentiment"][t + 1 :])
        assert features["event_guidance"][: t + 1].sum() == 0  # a new kind, only later


def test_latest_headlines_visible_at_a_decision(events: NewsEvents) -> None:
    early_close = session_closes(["2019-11-29"])[0]  # 13:00 New York
    latest = latest_headlines(events, "AAA", early_close, 2)
    assert [h.headline for h in latest] == [
        "AAA faces lawsuit over recall",
        "AAA beats estimates, raises guidance",
    ]
    assert latest[0].published_at == pd.Timestamp("2019-11-25T16:01-05:00")
    everyone = latest_headlines(events, None, early_close, 3)
    assert [h.symbol for h in everyone] == ["BBB", "ZZZ", "AAA"]  # 12:59 is before 13:00
    at_the_second = latest_headlines(events, "BBB", pd.Timestamp("2019-11-29T13:01-05:00"), 5)
    assert len(at_the_second) == 2  # an item published exactly at the time is visible
    assert latest_headlines(events, "BBB", early_close, 0) == []
    assert latest_headlines(events, "NOPE", early_close, 3) == []
    with pytest.raises(ConfigError, match="k must be >= 0"):
        latest_headlines(events, "AAA", early_close, -1)


def test_items_after_the_data_are_ignored_with_a_warning_naming_them(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "future.csv",
        [
            ["2019-11-26T12:00:00-05:00", "AAA", "AAA beats", "", ""],
            ["2030-01-02T09:00:00Z", "AAA", "From the future", "", ""],
            ["2019-12-03T16:00:01-05:00", "BBB", "One second late", "", ""],
        ],
    )
    with pytest.warns(NewsWarning, match=r"2 news item\(s\) published after the last close") as w:
        f = news_features(panel(), load_news(path))
    message = str(w[0].message)
    assert f"{path}:3" in message and f"{path}:4" in message and "2030-01-02" in message
    assert f["news_count"].sum() == 1


def test_a_naive_time_is_an_error_unless_a_timezone_is_given(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "naive.csv",
        [
            ["2019-11-25T15:59:00-05:00", "AAA", "ok", "", ""],
            ["2019-11-25 15:59", "AAA", "x", "", ""],
        ],
    )
    with pytest.raises(
        DataError, match=rf"{path}:3: published_at '2019-11-25 15:59' has no timezone"
    ):
        load_news(path)
    events = load_news(path, timezone="America/New_York")
    assert events.published_at[0] == events.published_at[1] == utc("2019-11-25T20:59Z")
    assert events.content_hash != load_news(path, timezone="UTC").content_hash
    with pytest.raises(ConfigError, match="not a known time zone"):
        load_news(path, timezone="Mars/Olympus")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("yesterday,AAA,x,,", r"published_at 'yesterday' is not a time"),
        (",AAA,x,,", "published_at is empty"),
        ("2019-11-25T15:59:00Z,,x,,", "no symbol"),
        ("2019-11-25T15:59:00Z,AAA,,,", "no headline"),
        ("2019-11-25T15:59:00Z,AAA,x,1.5,", r"score must be a number in \[-1, 1\], got '1.5'"),
        ("2019-11-25T15:59:00Z,AAA,x,good,", r"score must be a number in \[-1, 1\], got 'good'"),
        ("2019-11-25T15:59:00Z,AAA,x,nan,", "score must be a number"),
        ("2019-11-25T15:59:00Z,AAA,x,,stock split", "event 'stock split' must be letters"),
        ("2019-11-25T15:59:00Z,AAA,x,", "expected 5 fields"),
    ],
)
def test_bad_rows_are_errors_naming_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        f"published_at,symbol,headline,score,event\n2019-11-25T15:00:00Z,A,ok,,\n{row}\n"
    )
    with pytest.raises(DataError, match=rf"{path}:3: {message}"):
        load_news(path)


def test_bad_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="news file not found"):
        load_news(tmp_path / "none.csv")
    bad_header = write_csv(tmp_path / "h.csv", [], header="published_at,symbol,headline,scroe")
    with pytest.raises(DataError, match=r"h.csv:1: unknown \['scroe'\] column"):
        load_news(bad_header)
    no_headline = write_csv(tmp_path / "m.csv", [], header="published_at,symbol")
    with pytest.raises(DataError, match=r"missing \['headline'\]"):
        load_news(no_headline)
    jsonl = tmp_path / "n.jsonl"
    good = {"published_at": "2019-11-25T15:00:00Z", "symbol": "A", "headline": "x"}
    jsonl.write_text(json.dumps(good) + "\n\n{not json\n")
    with pytest.raises(DataError, match=r"n.jsonl:3: not a JSON object"):
        load_news(jsonl)
    jsonl.write_text(json.dumps({**good, "published_at": 1574694000}) + "\n")
    with pytest.raises(DataError, match=r"n.jsonl:1: published_at must be ISO 8601 text"):
        load_news(jsonl)
    other = tmp_path / "news.txt"
    other.write_text("x")
    with pytest.raises(DataError, match=r"\.csv or \.jsonl"):
        load_news(other)


def test_an_unknown_calendar_is_named(events: NewsEvents) -> None:
    with (
        pytest.raises(UnknownNameError, match="unknown exchange calendar 'XXXX'"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", NewsWarning)
        news_features(panel(), events, calendar="XXXX")


def test_the_first_row_window_opens_at_the_previous_close(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "edges.csv",
        [
            ["2019-11-22T15:59:00-05:00", "AAA", "before Friday's close", "", ""],
            ["2019-11-22T16:00:00-05:00", "AAA", "at Friday's close", "", ""],
            ["2019-11-22T16:01:00-05:00", "AAA", "after Friday's close", "", ""],
            ["2019-11-25T16:00:00-05:00", "AAA", "at Monday's close", "", ""],
        ],
    )
    events = load_news(path)
    for calendar in ("XNYS", None):  # the calendar's previous session, or the previous weekday
        alignment = align_news(panel(), events, calendar=calendar)
        np.testing.assert_array_equal(alignment.rows, [-1, -1, 0, 0])
        assert alignment.before_first == 2
    # a Monday after a holiday Friday: the window opens at Thursday's close with the calendar
    good_friday = load_news(
        write_csv(tmp_path / "gf.csv", [["2019-04-19T12:00:00-04:00", "AAA", "x", "", ""]])
    )
    assert align_news(panel(["2019-04-22"]), good_friday).rows[0] == 0
    assert align_news(panel(["2019-04-22"]), good_friday, calendar=None).rows[0] == -1


def test_the_llm_prompt_ends_with_the_headlines_visible_at_the_decision() -> None:
    dates = pd.bdate_range("2019-11-18", "2019-12-06")
    data = panel(dates[dates != "2019-11-28"].to_numpy().astype("datetime64[D]"))
    env = PortfolioEnv(data, window=2, snapshot_lookback=3, random_start=False, episode_length=None)
    _, info = env.reset(seed=0)
    while info["snapshot"].date != "2019-11-29":
        info = env.step(env.current_weights())[4]
    news = str(FIXTURES / "news.csv")
    agent = LLMAgent(LLMConfig(lookback=2, cache_path=None, news=news, headlines=2))
    user = agent.prompt(info["snapshot"])[1]["content"]
    plain = LLMAgent(LLMConfig(lookback=2, cache_path=None)).prompt(info["snapshot"])[1]
    # the prompt without news, then the headlines published by the 13:00 early close: not
    # BBB's 13:01 item, nor AAA's of Saturday and Monday
    assert user == plain["content"] + "\n" + "\n".join(
        [
            "Latest headlines (up to 2 a symbol, newest first):",
            "AAA: AAA faces lawsuit over recall",
            "AAA: AAA beats estimates, raises guidance",
            "BBB: BBB did not miss forecasts",
        ]
    )
    assert "headlines" not in plain["content"].lower()
    first = env.reset(seed=0)[1]["snapshot"]  # 2019-11-19: nothing for the panel yet
    assert agent.prompt(first)[1]["content"].endswith("newest first):\nnone")
    with pytest.raises(ConfigError, match="headlines name companies"):
        LLMConfig(cache_path=None, news=news, anonymize_tickers=True)
    with pytest.raises(ConfigError, match="headlines >= 1"):
        LLMConfig(cache_path=None, news=news, headlines=0)


def test_evaluate_takes_news_and_macro_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from marketarena.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    news = write_csv(
        tmp_path / "news.csv",
        [
            ["2019-11-29T12:59:00-05:00", "AAPL", "Apple shares surge", "", ""],
            ["2019-12-02T15:00:00-05:00", "MSFT", "Microsoft beats estimates", "", "earnings"],
        ],
    )
    config = tmp_path / "eval.yaml"
    config.write_text(
        "features: [log_return, sentiment, event_earnings, macro_synthetic_rate]\nwindow: 3\n"
    )
    argv = ["evaluate", "--config", str(config), "--agent", "equal_weight", "--no-baselines"]
    argv += ["--start", "2019-11-25", "--end", "2019-12-31", "--benchmark", "none"]
    argv += ["--news", str(news), "--macro", str(FIXTURES / "macro.csv"), "--output", "out"]
    console = Console(record=True, width=200)
    assert main(argv, console=console) == 0, console.export_text()
    settings = json.loads((tmp_path / "out" / "metrics.json").read_text())["settings"]
    assert settings["features"] == [
        "log_return",
        "sentiment",
        "event_earnings",
        "macro_synthetic_rate",
    ]
    assert settings["data"]["notes"] == [
        f"news: 2 of 2 items from {news}",
        f"macro: macro_synthetic_cpi, macro_synthetic_rate from {FIXTURES / 'macro.csv'}; "
        "1 '.' values skipped",
    ]
    # the rate is first released on 2019-11-25: with a 3-row window the first decision is 11-27
    assert settings["start"] == "2019-11-27"
    code = main([*argv[:-2], "--output", "bad", "--news", "missing.csv"], console=console)
    assert code == 1 and "error: news file not found: missing.csv" in console.export_text()
