"""Follow a CSV file as rows are appended to it: :class:`FileFeed`.

The file is in the long format the loaders read, ``date,symbol,open,high,low,close,volume``
(a header line first; ``close`` required, the others optional), one bar per row, appended
in time order by some other process. ``date`` is the bar's END: with a time zone for
intraday bars (``2024-03-05T10:05:00-05:00`` or ``...Z``); a day (``2024-03-05``) for daily
bars, stamped with its session's close (see :func:`~marketarena.envs.feeds.base.daily_bar_end`).

Following:

* the file is read from its start (rows before ``after`` are skipped), then polled every
  ``poll`` seconds (default 1) for new bytes;
* a last line without its newline is a row still being written: it waits for the newline;
* a file that shrinks (truncated), whose last bytes read changed (rewritten in place, even
  past its old length) or that is replaced by another (rotated: a new inode) is read again
  from its start, counted in ``stats.truncations`` and reported (an event and a log
  warning); rows already delivered come back as identical duplicates or late bars and are
  dropped by the shared policy, so nothing is delivered twice;
* a row that cannot be parsed (wrong column count, a field that is not a number, a time
  without a time zone) is skipped, counted in ``stats.garbage`` and reported with its line
  number; a parsed bar that is invalid (high < low, ...) stops the feed with an error naming
  symbol and time, as for every feed;
* a missing file is waited for (it may not exist yet), reported once.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import os
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from marketarena.envs.errors import ConfigError, DataError
from marketarena.envs.feeds.base import DEFAULT_GRACE, Bar, daily_bar_end, to_utc
from marketarena.envs.feeds.stream import StreamFeed
from marketarena.envs.news import DEFAULT_CALENDAR

__all__ = ["FileFeed"]

log = logging.getLogger("marketarena.feeds")
_FIELDS = ("open", "high", "low", "close", "volume")
#: how many of the last bytes read are checked, each poll, to be still there
_CHECKED = 256


class FileFeed(StreamFeed):
    """The :class:`~marketarena.envs.feeds.base.Feed` of a growing CSV file (module
    docstring).

    Args:
        path: the CSV file.
        symbols, interval: the universe and the bar interval of the file's rows.
        poll: seconds between looks at the file (default 1.0).
        Others as :class:`~marketarena.envs.feeds.stream.StreamFeed`.
    """

    def __init__(
        self,
        path: str | Path,
        symbols: Sequence[str],
        interval: str,
        *,
        poll: float = 1.0,
        calendar: str | None = DEFAULT_CALENDAR,
        grace: float = DEFAULT_GRACE,
        after: Any = None,
        until: Any = None,
        idle_timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            symbols,
            interval,
            name=name or f"file {path}",
            calendar=calendar,
            grace=grace,
            after=after,
            until=until,
            idle_timeout=idle_timeout,
        )
        if not poll > 0:
            raise ConfigError(f"{self.name}: poll {poll!r} seconds must be > 0")
        self.path = Path(path)
        self.poll = float(poll)
        self.calendar = calendar

    async def _bars(self) -> AsyncGenerator[Bar | None, None]:
        inode: tuple[int, int] | None = None
        offset = 0
        seen = b""  # the last bytes read, to notice a file rewritten in place
        line_no = 0
        header: list[str] | None = None
        buffer = b""
        waiting_reported = False
        while not self.closed:
            try:
                info = os.stat(self.path)
            except FileNotFoundError:
                if not waiting_reported:
                    self._report("the file does not exist (yet); waiting for it")
                    waiting_reported = True
                yield None
                await asyncio.sleep(self.poll)
                continue
            identity = (info.st_dev, info.st_ino)
            if inode is not None and (
                identity != inode
                or info.st_size < offset
                or (info.st_size > offset and self._rewritten(offset, seen))
            ):
                what = "replaced (rotated)" if identity != inode else "truncated or rewritten"
                self.stats.truncations += 1
                self._report(f"the file was {what}; reading it again from its start")
                offset, line_no, header, buffer, seen = 0, 0, None, b"", b""
            inode = identity
            if info.st_size > offset:
                with open(self.path, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read(info.st_size - offset)
                seen = (seen + chunk)[-_CHECKED:]
                offset += len(chunk)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")  # the last piece: a line not yet ended
                for raw in lines:
                    line_no += 1
                    text = raw.decode("utf-8", errors="replace").strip()
                    if not text:
                        continue
                    if header is None:
                        header = [c.strip().lower() for c in next(csv.reader([text]))]
                        missing = {"date", "symbol", "close"} - set(header)
                        if missing:
                            raise DataError(
                                f"{self.name}: the header {header} lacks {sorted(missing)} "
                                "(columns date,symbol,open,high,low,close,volume)"
                            )
                        continue
                    bar = self._parse(header, text, line_no)
                    if bar is not None:
                        yield bar
            yield None
            await asyncio.sleep(self.poll)

    def _rewritten(self, offset: int, seen: bytes) -> bool:
        """Whether the bytes before ``offset`` are no longer those read (the file was
        truncated and rewritten past the old length between two polls)."""
        with open(self.path, "rb") as fh:
            fh.seek(offset - len(seen))
            return fh.read(len(seen)) != seen

    def _parse(self, header: list[str], text: str, line_no: int) -> Bar | None:
        row = next(csv.reader([text]))
        if len(row) != len(header):
            self._garbage(line_no, f"{len(row)} fields, the header has {len(header)}")
            return None
        cells = dict(zip(header, (c.strip() for c in row), strict=True))
        try:
            if self.interval == "1d":
                end = daily_bar_end(cells["date"], self.calendar)
            else:
                end = to_utc(cells["date"], "date")
            values = {f: float(cells[f]) if cells.get(f, "") != "" else None for f in _FIELDS}
        except (ValueError, DataError) as exc:
            self._garbage(line_no, str(exc))
            return None
        close = values["close"]
        if close is None:
            self._garbage(line_no, "no close")
            return None
        return Bar(
            cells["symbol"],
            end,
            self.interval,
            close=close,
            open=values["open"],
            high=values["high"],
            low=values["low"],
            volume=values["volume"],
        )

    def _garbage(self, line_no: int, why: str) -> None:
        self.stats.garbage += 1
        self._report(f"line {line_no} skipped: {why}")

    def _report(self, text: str) -> None:
        self.stats.event(f"{self.name}: {text}")
        log.warning("%s: %s", self.name, text)
