"""Errors a user can fix: a bad setting, file, date range, agent spec or name.

Every one derives from :class:`MarketArenaError`, which the ``marketarena`` command prints as
one line (``error: ...``) with exit code 1; anything else that escapes a command is a bug and
keeps its traceback. Each class also derives from the builtin that callers caught before
(``ValueError``, ``KeyError``, ``FileNotFoundError``), so ``except ValueError`` still works.

They live in ``envs/``, the lowest layer, so that every layer can raise them.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "MarketArenaError", "MissingFileError", "UnknownNameError"]


class MarketArenaError(Exception):
    """A mistake in what the user asked for; the message says what, where and what to do."""


class ConfigError(MarketArenaError, ValueError):
    """A setting, option, config key or spec with a value that cannot be used: an unknown
    key, a value out of bounds, an empty date range, an unknown agent spec or task."""


class DataError(MarketArenaError, ValueError):
    """Market data, a trade log or a saved result that cannot be used as asked: invalid
    prices, dates the data does not cover, data that differs from what a run was built on."""


class UnknownNameError(MarketArenaError, KeyError):
    """A name that is not among the known ones (a symbol, feature, dataset, split or run);
    the message lists the known ones."""

    def __str__(self) -> str:  # KeyError's str() is the repr of its argument
        return str(self.args[0]) if self.args else ""


class MissingFileError(MarketArenaError, FileNotFoundError):
    """A file or folder the user named does not exist."""
