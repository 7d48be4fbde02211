"""An on-disk cache of computed arrays (indicators, sentiment features), shared by runs.

An entry is keyed by everything its value depends on: the kind (``"indicator"``,
``"sentiment"``), the data's content hash, the parameters and the source code of the function
that computed it (:func:`source_hash`). Change any of them and the key changes, so a stale
value is never read; the old file simply stops being used.

Entries are ``.npy`` files under :func:`cache_dir` (``$MARKETARENA_CACHE_DIR``, else
``~/.cache/marketarena``), ``<kind>/<sha256 of the key>.npy``, written atomically (a temporary
file, then a rename), so two runs computing the same entry at once both end with a whole file.
A file that cannot be read back (truncated or corrupted) is recomputed and rewritten, with a
:class:`CacheWarning` naming it; a cache folder that cannot be written is a warning too, and
the value is still returned. Set ``MARKETARENA_CACHE_DIR=off`` to compute everything afresh
and write nothing.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "MARKETARENA_CACHE_DIR"


class CacheWarning(UserWarning):
    """A cache entry was unreadable (and recomputed) or could not be written."""


def cache_dir() -> Path | None:
    """The cache folder, or None when caching is off (``MARKETARENA_CACHE_DIR=off``)."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in ("off", "0", "none", "false"):
        return None
    if value:
        return Path(value).expanduser()
    return Path.home() / ".cache" / "marketarena"


def source_hash(fn: Callable[..., Any]) -> str:
    """A hash of ``fn``'s source code (its bytecode and constants where no source exists), so
    that editing the function invalidates what it computed."""
    target = inspect.unwrap(fn)
    try:
        text = inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        text = repr((code.co_code, code.co_consts)) if code is not None else repr(target)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_key(kind: str, key: Mapping[str, Any]) -> str:
    """The entry's file stem: a sha256 of ``kind`` and the JSON of ``key`` (sorted keys)."""
    blob = json.dumps({"kind": kind, **key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def cached_array(
    kind: str, key: Mapping[str, Any], compute: Callable[[], np.ndarray]
) -> tuple[np.ndarray, bool]:
    """The array stored under ``(kind, key)``, or ``compute()`` stored there now.

    Returns the array and whether it came from the cache.
    """
    folder = cache_dir()
    if folder is None:
        return np.asarray(compute()), False
    path = folder / kind / f"{cache_key(kind, key)}.npy"
    if path.exists():
        try:
            return np.load(path, allow_pickle=False), True
        except (OSError, ValueError, EOFError) as exc:
            warnings.warn(
                f"cache entry {path} is unreadable ({type(exc).__name__}: {exc}); recomputing it",
                CacheWarning,
                stacklevel=2,
            )
    value = np.asarray(compute())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, value, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        warnings.warn(
            f"could not write the cache entry {path} ({exc}); computed without caching",
            CacheWarning,
            stacklevel=2,
        )
    return value, False
