"""News and sentiment as point-in-time events per symbol, aligned to the decision after each close.

File format (CSV with a header row, or JSONL with one object a line; chosen by the suffix,
``.csv`` or ``.jsonl``/``.ndjson``):

* ``published_at`` (required): when the item became public, ISO 8601 **with** a UTC offset or
  ``Z`` (``2019-11-29T12:59:00-05:00``, ``2020-01-02T21:01:00Z``). A time without a timezone is
  an error naming the file and line, unless ``timezone=`` names the zone to assume for such
  times (``load_news(path, timezone="America/New_York")``); times with an offset keep theirs.
* ``symbol`` (required): the panel symbol the item is about.
* ``headline`` (required): the text shown to an LLM and scored when no score is given.
* ``body`` (optional): kept with the item; not scored (headlines only, see
  :class:`LexiconScorer`).
* ``score`` (optional): a given sentiment in ``[-1, 1]``; empty (or JSON null) means "score
  it with the scorer".
* ``event`` (optional): an event kind such as ``earnings`` or ``mna`` (letters, digits and
  ``_``; lower-cased), which becomes the flag feature ``event_<kind>``.

Any other column is an error naming it (a misspelt ``scroe`` would otherwise be silently
replaced by the lexicon's score). A row without a symbol or headline, with a time that does not
parse or a score that is not a number in ``[-1, 1]`` is an error naming the file and line.

Timing. The decision at row ``t`` comes after the close of session ``t``. Each session's close
time comes from ``exchange_calendars`` (``calendar="XNYS"`` by default, any of its names), early
closes included (2019-11-29 closed at 13:00 New York time). A date that the calendar does not
list as a session, or that lies outside the calendar's range, closes at the fixed
:data:`FALLBACK_CLOSE`, 16:00 America/New_York; ``calendar=None`` uses that fixed close for every
date. An item is visible at row ``t`` iff ``published_at <= close(t)``; it *becomes* visible in
session ``t`` when it was published in ``(close(t-1), close(t)]``, so an item stamped on a
weekend or a holiday lands on the next session. The window of the first row opens at the close
of the session before it (the calendar's, else the previous weekday's 16:00 New York).

Items outside the data, ignored and counted (recorded in the data's ``notes`` and in
:class:`NewsAlignment`): items published at or before that opening close (older than the
panel), and items published after the last session's close (in the future of the data:
a :class:`NewsWarning` names the first of them). Items for a symbol that is not in the panel
are ignored too, with a warning naming each such symbol and its count.

Features per symbol and session, ``(T, N)`` arrays (:func:`news_features`, attached to the
data as feature columns by :func:`with_news`, so ``features: [log_return, sentiment]`` works
in an env):

* ``news_count``: items that became visible in session ``t``.
* ``sentiment``: the mean score of those items; in a session without news, the last value
  decayed by ``0.5 ** (1 / half_life)`` (half-life :data:`DEFAULT_HALF_LIFE` = 5 sessions);
  0 before a symbol's first item.
* ``event_<kind>``: 1 in the session an item of that kind became visible, else 0 (one column per
  kind found in the file, or per kind asked for).

Scores: an item's given ``score``, else its headline scored by a :class:`SentimentScorer`
(default :class:`LexiconScorer`, a short finance word list of ours). The scorer's outputs are
cached on disk (:mod:`marketarena.envs.cache`, kind ``"sentiment"``) keyed by the file's
content hash, the scorer's name and the source of its class. An LLM scorer cannot live here
(agents are a higher layer); it can implement the :class:`SentimentScorer` protocol there.

:func:`latest_headlines` gives the latest ``k`` headlines visible at a decision, for prompts.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import re
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import exchange_calendars as xc
import numpy as np
import pandas as pd

from marketarena.envs.cache import cached_array, source_hash
from marketarena.envs.data import MarketData, require_daily
from marketarena.envs.errors import ConfigError, DataError, MissingFileError, UnknownNameError

__all__ = [
    "DEFAULT_CALENDAR",
    "DEFAULT_HALF_LIFE",
    "FALLBACK_CLOSE",
    "Headline",
    "LexiconScorer",
    "NewsAlignment",
    "NewsEvents",
    "NewsWarning",
    "SentimentScorer",
    "add_feature_columns",
    "align_news",
    "item_scores",
    "latest_headlines",
    "load_news",
    "news_features",
    "session_closes",
    "with_news",
]

DEFAULT_CALENDAR = "XNYS"
#: the close of a date the calendar does not cover: 16:00 in New York
FALLBACK_CLOSE = (16, "America/New_York")
#: sessions over which a symbol's last sentiment halves when no news arrives
DEFAULT_HALF_LIFE = 5.0
REQUIRED_COLUMNS = ("published_at", "symbol", "headline")
OPTIONAL_COLUMNS = ("body", "score", "event")
_KIND = re.compile(r"^[a-z0-9_]+$")
#: items named in a warning before "..."
_SHOWN = 5


class NewsWarning(UserWarning):
    """News items ignored: for symbols not in the panel, or published after the data ends."""


# ----------------------------------------------------------------------------- loading
@dataclass(frozen=True, eq=False)
class NewsEvents:
    """News items sorted by publication time (ties keep the file's order).

    Attributes:
        source: the file they were read from.
        published_at: ``(M,)`` ``datetime64[ns]`` in UTC, ascending.
        symbols, headlines, bodies: one per item (``""`` where no body).
        scores: ``(M,)`` given scores, NaN where the file gives none.
        kinds: the event kind of each item, ``""`` where none.
        lines: ``(M,)`` the line of each item in ``source``, for messages.
        content_hash: a SHA-256 of the file's bytes and the ``timezone`` it was read with.
    """

    source: str
    published_at: np.ndarray
    symbols: tuple[str, ...]
    headlines: tuple[str, ...]
    bodies: tuple[str, ...]
    scores: np.ndarray
    kinds: tuple[str, ...]
    lines: np.ndarray
    content_hash: str

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def event_kinds(self) -> tuple[str, ...]:
        """The event kinds present, sorted."""
        return tuple(sorted({k for k in self.kinds if k}))

    def where(self, i: int) -> str:
        """``file:line`` of item ``i``."""
        return f"{self.source}:{int(self.lines[i])}"

    @functools.cached_property
    def _by_symbol(self) -> dict[str, np.ndarray]:
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(self.symbols):
            groups.setdefault(s, []).append(i)
        return {s: np.asarray(ix, dtype=np.int64) for s, ix in groups.items()}


def _rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """``(line, row)`` pairs of a CSV or JSONL file; a bad header or line is a DataError."""
    suffix = path.suffix.lower()
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            if suffix == ".csv":
                reader = csv.DictReader(fh)
                _check_columns(path, reader.fieldnames or [], 1)
                for row in reader:
                    if None in row or any(v is None for v in row.values()):
                        raise DataError(
                            f"{path}:{reader.line_num}: expected {len(reader.fieldnames or [])} "
                            "fields as in the header"
                        )
                    yield reader.line_num, row
            elif suffix in (".jsonl", ".ndjson"):
                for n, text in enumerate(fh, start=1):
                    if not text.strip():
                        continue
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{n}: not a JSON object ({exc.msg})") from None
                    if not isinstance(obj, dict):
                        raise DataError(f"{path}:{n}: not a JSON object")
                    _check_columns(path, list(obj), n)
                    yield n, obj
            else:
                raise DataError(
                    f"{path}: news files are .csv or .jsonl, not {suffix or 'no suffix'}"
                )
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _check_columns(path: Path, columns: Sequence[str], line: int) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown:
        what = [f"missing {missing}"] if missing else []
        what += [f"unknown {unknown}"] if unknown else []
        raise DataError(
            f"{path}:{line}: {' and '.join(what)} column(s); a news file has "
            f"{list(REQUIRED_COLUMNS)} and optionally {list(OPTIONAL_COLUMNS)}"
        )


def _text(row: Mapping[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: {key} must be text, got {value!r}")
    return value.strip()


def _utc_ns(text: str, timezone: str | None, where: str) -> int:
    if not text:
        raise DataError(f"{where}: published_at is empty")
    try:
        stamp = pd.Timestamp(text)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: published_at {text!r} is not a time ({exc})") from None
    if pd.isna(stamp):
        raise DataError(f"{where}: published_at {text!r} is not a time")
    if stamp.tzinfo is None:
        if timezone is None:
            raise DataError(
                f"{where}: published_at {text!r} has no timezone; write it with an offset "
                "(2020-01-02T15:59:00-05:00, or Z for UTC) or pass timezone= "
                "(e.g. 'America/New_York') to assume one"
            )
        try:
            stamp = stamp.tz_localize(timezone)
        except (ValueError, TypeError) as exc:  # a time that does not exist or repeats (DST)
            raise DataError(f"{where}: published_at {text!r} in {timezone}: {exc}") from None
    return int(stamp.tz_convert("UTC").as_unit("ns").value)


def _score(row: Mapping[str, Any], where: str) -> float:
    value = row.get("score")
    if value is None or (isinstance(value, str) and not value.strip()):
        return float("nan")
    if isinstance(value, bool):
        raise DataError(f"{where}: score must be a number in [-1, 1], got {value!r}")
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: score must be a number in [-1, 1], got {value!r}") from None
    if not -1.0 <= score <= 1.0:  # NaN fails this too
        raise DataError(f"{where}: score must be a number in [-1, 1], got {value!r}")
    return score


def load_news(path: str | Path, *, timezone: str | None = None) -> NewsEvents:
    """Read a news file (module docstring: format), sorted by publication time.

    Args:
        path: a ``.csv`` or ``.jsonl`` file.
        timezone: the zone assumed for times written without an offset (default ``None``:
            such a time is an error naming the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"news file not found: {path}")
    if timezone is not None:
        try:
            pd.Timestamp("2000-01-01").tz_localize(timezone)
        except Exception:  # each tz backend raises its own error for an unknown zone
            raise ConfigError(f"timezone={timezone!r} is not a known time zone") from None
    stamps: list[int] = []
    symbols: list[str] = []
    headlines: list[str] = []
    bodies: list[str] = []
    scores: list[float] = []
    kinds: list[str] = []
    lines: list[int] = []
    for line, row in _rows(path):
        where = f"{path}:{line}"
        published = row.get("published_at")
        if published is not None and not isinstance(published, str):
            raise DataError(f"{where}: published_at must be ISO 8601 text, got {published!r}")
        stamps.append(_utc_ns((published or "").strip(), timezone, where))
        symbol = _text(row, "symbol", where)
        if not symbol:
            raise DataError(f"{where}: no symbol")
        headline = _text(row, "headline", where)
        if not headline:
            raise DataError(f"{where}: no headline")
        kind = _text(row, "event", where).lower()
        if kind and not _KIND.match(kind):
            raise DataError(
                f"{where}: event {kind!r} must be letters, digits and _ (it names a feature)"
            )
        symbols.append(symbol)
        headlines.append(headline)
        bodies.append(_text(row, "body", where))
        scores.append(_score(row, where))
        kinds.append(kind)
        lines.append(line)
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
    digest = hashlib.sha256(path.read_bytes())
    digest.update(f"\x1ftimezone={timezone}".encode())

    def pick(values: list[str]) -> tuple[str, ...]:
        return tuple(values[i] for i in order)

    return NewsEvents(
        source=str(path),
        published_at=np.asarray(stamps, dtype=np.int64)[order].astype("datetime64[ns]"),
        symbols=pick(symbols),
        headlines=pick(headlines),
        bodies=pick(bodies),
        scores=np.asarray(scores, dtype=np.float64)[order],
        kinds=pick(kinds),
        lines=np.asarray(lines, dtype=np.int64)[order],
        content_hash=digest.hexdigest(),
    )


# ------------------------------------------------------------------------- close times
@functools.lru_cache(maxsize=16)
def _calendar(name: str, start: pd.Timestamp, end: pd.Timestamp) -> xc.ExchangeCalendar:
    with warnings.catch_warnings():
        # exchange_calendars 4.13 reads Series.values of tz-aware times, which pandas 3.1
        # deprecates: its warning, not ours, on every calendar built
        warnings.filterwarnings("ignore", "Series.values returning an ndarray", DeprecationWarning)
        return _build_calendar(name, start, end)


def _build_calendar(name: str, start: pd.Timestamp, end: pd.Timestamp) -> xc.ExchangeCalendar:
    try:
        return xc.get_calendar(name, start=start, end=end)
    except xc.errors.InvalidCalendarName:
        raise UnknownNameError(
            f"unknown exchange calendar {name!r}; known: e.g. XNYS, XNAS, XLON, XTKS "
            f"({len(xc.get_calendar_names())} in exchange_calendars.get_calendar_names())"
        ) from None
    except (xc.errors.CalendarError, ValueError):
        # a range beyond what the calendar supports: its default range; the rest falls back
        return xc.get_calendar(name)


def _fallback_closes(days: pd.DatetimeIndex) -> pd.DatetimeIndex:
    hour, zone = FALLBACK_CLOSE
    return (days + pd.Timedelta(hours=hour)).tz_localize(zone).tz_convert("UTC")


def session_closes(
    dates: Sequence[Any] | np.ndarray, calendar: str | None = DEFAULT_CALENDAR
) -> np.ndarray:
    """The close time of each date's session, ``(T,)`` ``datetime64[ns]`` in UTC.

    From ``exchange_calendars`` (``calendar``, early closes included) for dates that are
    sessions of the calendar; otherwise, or with ``calendar=None``, 16:00 America/New_York.
    """
    days = pd.DatetimeIndex(np.asarray(dates, dtype="datetime64[D]")).as_unit("ns")
    closes = _fallback_closes(days)
    if calendar is not None and len(days):
        cal = _calendar(calendar, days.min(), days.max())
        known = pd.DatetimeIndex(cal.closes.reindex(days)).tz_convert("UTC").as_unit("ns")
        closes = known.where(known.notna(), closes)
    return closes.tz_convert("UTC").tz_localize(None).as_unit("ns").to_numpy()


def _opening_close(first: np.datetime64, calendar: str | None) -> np.datetime64:
    """The close of the session before ``first``: where row 0's news window opens."""
    day = pd.Timestamp(first)
    if calendar is not None:
        cal = _calendar(calendar, day - pd.Timedelta(days=15), day)
        earlier = cal.sessions[cal.sessions < day]
        if len(earlier):
            return session_closes([earlier[-1].to_datetime64()], calendar)[0]
    previous = day - pd.offsets.BDay(1)
    return session_closes([previous.to_datetime64()], None)[0]


# --------------------------------------------------------------------------- alignment
@dataclass(frozen=True)
class NewsAlignment:
    """Where each item lands in a panel.

    Attributes:
        rows: ``(M,)`` the row at which each item becomes visible, -1 where it is ignored.
        columns: ``(M,)`` the item's symbol column, -1 where the symbol is not in the panel.
        before_first: items published at or before the close preceding the first row.
        after_last: items published after the last row's close.
        unknown_symbols: items per symbol that is not in the panel.
    """

    rows: np.ndarray
    columns: np.ndarray
    before_first: int
    after_last: int
    unknown_symbols: Mapping[str, int]

    @property
    def used(self) -> np.ndarray:
        """Mask of the items that count in the features."""
        return (self.rows >= 0) & (self.columns >= 0)

    def note(self, events: NewsEvents) -> str:
        """One line for the data's notes."""
        parts = [f"news: {int(self.used.sum())} of {len(events)} items from {events.source}"]
        if self.before_first:
            parts.append(f"{self.before_first} before the first session ignored")
        if self.after_last:
            parts.append(f"{self.after_last} after the last close ignored")
        if self.unknown_symbols:
            parts.append(
                f"{sum(self.unknown_symbols.values())} for symbols not in the panel ignored "
                f"({', '.join(f'{s}: {n}' for s, n in sorted(self.unknown_symbols.items()))})"
            )
        return "; ".join(parts)


def align_news(
    data: MarketData, events: NewsEvents, *, calendar: str | None = DEFAULT_CALENDAR
) -> NewsAlignment:
    """The row at which each item becomes visible in ``data`` (module docstring: timing).

    Warns (:class:`NewsWarning`) about items after the last close and about symbols that are
    not in the panel; both are ignored. Intraday data is a :class:`DataError` (news aligns
    on session closes).
    """
    require_daily(data, "news items")
    closes = session_closes(data.dates, calendar)
    windows = np.concatenate([[_opening_close(data.dates[0], calendar)], closes])
    # position k in [1, T] means close(k-2) < published <= close(k-1): visible from row k-1
    pos = np.searchsorted(windows, events.published_at, side="left")
    inside = (pos >= 1) & (pos <= len(closes))
    rows = np.where(inside, pos - 1, -1)
    index = {s: j for j, s in enumerate(data.symbols)}
    columns = np.asarray([index.get(s, -1) for s in events.symbols], dtype=np.int64)
    unknown = Counter(s for s, j in zip(events.symbols, columns, strict=True) if j < 0)
    after = np.flatnonzero(pos > len(closes))
    if after.size:
        shown = ", ".join(
            f"{events.symbols[i]} at {pd.Timestamp(events.published_at[i], tz='UTC')} "
            f"({events.where(i)})"
            for i in after[:_SHOWN]
        )
        warnings.warn(
            f"{after.size} news item(s) published after the last close of {data.name} "
            f"({pd.Timestamp(closes[-1], tz='UTC')}) are in the future of the data and "
            f"ignored: {shown}{', ...' if after.size > _SHOWN else ''}",
            NewsWarning,
            stacklevel=2,
        )
    if unknown:
        warnings.warn(
            f"{sum(unknown.values())} news item(s) in {events.source} for symbols not in "
            f"{data.name} are ignored: "
            + ", ".join(f"{s} ({n})" for s, n in sorted(unknown.items())),
            NewsWarning,
            stacklevel=2,
        )
    return NewsAlignment(
        rows=rows.astype(np.int64),
        columns=columns,
        before_first=int((pos == 0).sum()),
        after_last=int(after.size),
        unknown_symbols=dict(unknown),
    )


# --------------------------------------------------------------------------- sentiment
class SentimentScorer(Protocol):
    """Scores texts in ``[-1, 1]`` (negative to positive). ``name`` keys the cache with the
    source of the scorer's class, so a changed scorer never reads old scores."""

    @property
    def name(self) -> str: ...

    def score(self, texts: Sequence[str]) -> np.ndarray: ...


class LexiconScorer:
    """A small finance lexicon of ours: simple, transparent, not a trained model.

    A headline's score is ``(positive - negative) / (positive + negative)`` over the lexicon's
    words it contains, 0 when it contains none. A word preceded within three words by a
    negation (``not``, ``no``, ``never``, ``without``, any ``...n't``) counts for the other side
    ("did not miss" is positive). Words are lower-cased runs of letters (with an apostrophe).
    """

    name = "lexicon"
    # word lists as text: a list literal (SIM905) would take one line a word
    POSITIVE = frozenset(
        "beat beats upgrade upgrades upgraded record surge surges surged soar soars soared "  # noqa: SIM905
        "rally rallies rallied jump jumps jumped gain gains profit profits profitable growth "
        "outperform outperforms strong stronger raises raised boost boosts approval approved "
        "dividend buyback exceeds exceeded rebound rebounds".split()
    )
    NEGATIVE = frozenset(
        "miss misses missed downgrade downgrades downgraded lawsuit lawsuits sue sues sued "  # noqa: SIM905
        "recall recalls recalled plunge plunges plunged slump slumps slumped loss losses "
        "fraud probe investigation bankruptcy bankrupt layoffs default defaults weak weaker "
        "cut cuts warning warns warned fall falls fell drop drops dropped decline declines "
        "underperform underperforms fined halt halted".split()
    )
    NEGATORS = frozenset({"not", "no", "never", "without", "nor"})
    WINDOW = 3
    _WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """One score per text in ``[-1, 1]``."""
        return np.asarray([self._score_one(t) for t in texts], dtype=np.float64)

    def _score_one(self, text: str) -> float:
        words = self._WORD.findall(text.lower())
        positive = negative = 0
        for i, word in enumerate(words):
            sign = 1 if word in self.POSITIVE else -1 if word in self.NEGATIVE else 0
            if not sign:
                continue
            before = words[max(0, i - self.WINDOW) : i]
            if any(w in self.NEGATORS or w.endswith("n't") for w in before):
                sign = -sign
            if sign > 0:
                positive += 1
            else:
                negative += 1
        total = positive + negative
        return (positive - negative) / total if total else 0.0


def item_scores(
    events: NewsEvents, scorer: SentimentScorer | None = None
) -> tuple[np.ndarray, bool]:
    """Each item's sentiment: its given score, else ``scorer``'s score of its headline.

    The scorer's outputs are cached (kind ``"sentiment"``) under the file's content hash, the
    scorer's name and its class's source. Returns the ``(M,)`` scores and whether the scorer's
    part came from the cache (``True`` also when no item needed scoring).
    """
    scorer = scorer if scorer is not None else LexiconScorer()
    missing = np.flatnonzero(np.isnan(events.scores))
    out = events.scores.copy()
    if not missing.size:
        return out, True

    def compute() -> np.ndarray:
        values = np.asarray(scorer.score([events.headlines[i] for i in missing]), dtype=float)
        if values.shape != missing.shape or not np.all((values >= -1) & (values <= 1)):
            raise ConfigError(
                f"sentiment scorer {scorer.name!r} must return {missing.size} scores in "
                f"[-1, 1], got shape {values.shape}"
            )
        return values

    key = {
        "news": events.content_hash,
        "scorer": scorer.name,
        "scorer_source": source_hash(type(scorer)),
    }
    values, hit = cached_array("sentiment", key, compute)
    out[missing] = values
    return out, hit


# ---------------------------------------------------------------------------- features
def news_features(
    data: MarketData,
    events: NewsEvents,
    *,
    calendar: str | None = DEFAULT_CALENDAR,
    half_life: float = DEFAULT_HALF_LIFE,
    scorer: SentimentScorer | None = None,
    event_kinds: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """``news_count``, ``sentiment`` and ``event_<kind>`` as ``(T, N)`` arrays (module
    docstring: definitions and timing).

    Args:
        half_life: sessions over which the last sentiment halves without news (default 5).
        scorer: scores headlines without a given score (default :class:`LexiconScorer`).
        event_kinds: the flag columns (default: every kind in the file, sorted).
    """
    return _news_columns(data, events, calendar, half_life, scorer, event_kinds)[0]


def _news_columns(
    data: MarketData,
    events: NewsEvents,
    calendar: str | None,
    half_life: float,
    scorer: SentimentScorer | None,
    event_kinds: Sequence[str] | None,
) -> tuple[dict[str, np.ndarray], NewsAlignment]:
    if not half_life > 0:
        raise ConfigError(f"half_life must be > 0 sessions, got {half_life}")
    kinds = tuple(events.event_kinds if event_kinds is None else event_kinds)
    bad = [k for k in kinds if not _KIND.match(k)]
    if bad:
        raise ConfigError(f"event kinds {bad} must be lower-case letters, digits and _")
    alignment = align_news(data, events, calendar=calendar)
    used = alignment.used
    rows, cols = alignment.rows[used], alignment.columns[used]
    shape = (data.n_periods, data.n_assets)
    count = np.zeros(shape)
    np.add.at(count, (rows, cols), 1.0)
    total = np.zeros(shape)
    np.add.at(total, (rows, cols), item_scores(events, scorer)[0][used])
    decay = 0.5 ** (1.0 / half_life)
    sentiment = np.zeros(shape)
    last = np.zeros(data.n_assets)
    # sequential in time (the carry), vectorised over symbols
    for t in range(data.n_periods):
        news = count[t] > 0
        last = np.where(news, total[t] / np.where(news, count[t], 1.0), last * decay)
        sentiment[t] = last
    out = {"news_count": count, "sentiment": sentiment}
    item_kinds = np.asarray(events.kinds, dtype=object)[used]
    for kind in kinds:
        flag = np.zeros(shape)
        mine = item_kinds == kind
        flag[rows[mine], cols[mine]] = 1.0
        out[f"event_{kind}"] = flag
    return out, alignment


def add_feature_columns(
    data: MarketData, columns: Mapping[str, np.ndarray], note: str
) -> MarketData:
    """``data`` with ``(T, N)`` ``columns`` appended to its features and ``note`` to its notes.

    A name the data already has is a :class:`ConfigError`.
    """
    clash = [n for n in columns if n in data.feature_names]
    if clash:
        raise ConfigError(f"{data.name} already has feature(s) {clash}")
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in columns.values()], axis=2)
    if data.features is not None:
        stacked = np.concatenate([np.asarray(data.features, dtype=np.float64), stacked], axis=2)
    return replace(
        data,
        features=stacked,
        feature_names=(*data.feature_names, *columns),
        notes=(*data.notes, note),
    )


def with_news(
    data: MarketData,
    events: NewsEvents | str | Path,
    *,
    calendar: str | None = DEFAULT_CALENDAR,
    half_life: float = DEFAULT_HALF_LIFE,
    scorer: SentimentScorer | None = None,
    event_kinds: Sequence[str] | None = None,
) -> MarketData:
    """``data`` with the news features of :func:`news_features` as feature columns.

    ``events`` may be a path (read with :func:`load_news`). The data's notes record how many
    items were used and ignored.
    """
    if not isinstance(events, NewsEvents):
        events = load_news(events)
    columns, alignment = _news_columns(data, events, calendar, half_life, scorer, event_kinds)
    return add_feature_columns(data, columns, alignment.note(events))


# ---------------------------------------------------------------------------- headlines
class Headline(NamedTuple):
    """One item as a prompt shows it."""

    published_at: pd.Timestamp
    symbol: str
    headline: str


def latest_headlines(
    events: NewsEvents,
    symbol_or_all: str | None,
    decision_close_time: pd.Timestamp | np.datetime64 | str,
    k: int,
) -> list[Headline]:
    """The ``k`` latest items published at or before ``decision_close_time``, newest first.

    Args:
        symbol_or_all: a symbol, or ``None`` for every symbol's items together.
        decision_close_time: the close before the decision (:func:`session_closes`); a
            ``datetime64`` or a naive time is taken as UTC.
        k: how many (0 gives none).
    """
    if k < 0:
        raise ConfigError(f"k must be >= 0 headlines, got {k}")
    stamp = pd.Timestamp(decision_close_time)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    end = int(np.searchsorted(events.published_at, stamp.as_unit("ns").to_datetime64(), "right"))
    if symbol_or_all is None:
        chosen = np.arange(end)
    else:
        mine = events._by_symbol.get(symbol_or_all, np.empty(0, dtype=np.int64))
        chosen = mine[mine < end]
    picked = chosen[::-1][:k] if k else chosen[:0]
    return [
        Headline(
            pd.Timestamp(events.published_at[i], tz="UTC"), events.symbols[i], events.headlines[i]
        )
        for i in picked
    ]
