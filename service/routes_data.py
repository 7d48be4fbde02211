"""The ``/data`` endpoints: the downloaded data directory, its coverage, downloads, deletions.

The folder is ``settings.data_dir`` (see :mod:`marketarena.envs.providers` for its format).

- ``GET /data/coverage?symbols=A,B``: per symbol first/last date, rows and gaps.
- ``GET /data/status``: symbols, the date span, rows, bytes on disk, the last download of
  each provider, and the providers available.
- ``POST /data/download`` ``{"symbols", "start", "end", "providers"}``: fetch through the
  providers in that fallback order (default ``settings.providers``), each under its rate
  limit (``settings.provider_limits``); every failure is in the response.
- ``DELETE /data/range?symbols=A,B&start=&end=[&force=true]``: delete those rows. Refused with
  409 when a stored run depends on them, unless ``force=true``. A run depends on the rows of
  its symbols dated up to its end when its data is this folder: its ``data_sha256`` hashes
  the data from the first date through its end (a continued run checks it), so deleting any
  such row would leave it unable to continue.

An unknown symbol or provider is a 404 naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field, field_validator

from marketarena.envs.errors import MissingFileError, UnknownNameError
from marketarena.envs.providers import (
    SYMBOL_PATTERN,
    DataDir,
    Downloader,
    RangeRows,
    available_providers,
)
from marketarena.evaluation.saved_runs.store import RunInfo, RunStore
from marketarena.service.app import settings_of
from marketarena.service.settings import ServiceSettings

router = APIRouter(prefix="/data", tags=["data"])

_DATE = r"^\d{4}-\d{2}-\d{2}$"
Settings = Annotated[ServiceSettings, Depends(settings_of)]


def _downloader(request: Request) -> Downloader:
    """The app's downloader, made on first use and kept, so that rate limits span requests."""
    state = request.app.state
    if getattr(state, "downloader", None) is None:
        state.downloader = Downloader(settings_of(request).provider_limits)
    found: Downloader = state.downloader
    return found


def _symbols(text: str | None) -> list[str] | None:
    """``A,B`` as a list (None for none given); a malformed symbol is a 422 naming it."""
    if text is None or not text.strip():
        return None
    out = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in out if not SYMBOL_PATTERN.match(s)]
    if bad:
        raise HTTPException(422, f"invalid request: symbols: {bad[0]!r} is not a symbol")
    return out


def _known(data: DataDir, symbols: list[str]) -> None:
    unknown = [s for s in symbols if s not in set(data.symbols())]
    if unknown:
        raise HTTPException(
            404, f"no data for symbol(s) {unknown} in {data.path}; symbols: {data.symbols()}"
        )


@router.get("/coverage")
def coverage(
    settings: Settings,
    symbols: Annotated[str | None, Query(description="comma-separated; default all")] = None,
) -> list[dict[str, Any]]:
    """Per symbol: first and last date, rows, and gaps (dates inside its span on which other
    symbols of the folder have bars and it has none)."""
    data = DataDir(settings.data_dir)
    chosen = _symbols(symbols)
    if chosen is not None:
        _known(data, chosen)
    return [
        {
            "symbol": c.symbol,
            "first_date": c.first_date,
            "last_date": c.last_date,
            "rows": c.rows,
            "gaps": c.gaps,
        }
        for c in data.coverage(chosen)
    ]


@router.get("/status")
def status(settings: Settings) -> dict[str, Any]:
    """The folder's symbols, date span, rows and size, the last download per provider, and
    the providers (their fallback order by default and every one installed)."""
    providers = {"default_order": list(settings.providers), "available": available_providers()}
    return {**DataDir(settings.data_dir).status(), "providers": providers}


class DownloadRequest(BaseModel):
    """What to download: symbols, an inclusive date range, and the providers in fallback
    order (default: the server's ``providers`` setting)."""

    symbols: list[Annotated[str, Field(pattern=SYMBOL_PATTERN.pattern)]] = Field(
        min_length=1, max_length=500
    )
    start: str = Field(pattern=_DATE)
    end: str = Field(pattern=_DATE)
    providers: list[str] | None = Field(default=None, min_length=1, max_length=20)

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: str, info: Any) -> str:
        start = info.data.get("start")
        if start is not None and end < start:
            raise ValueError(f"end {end} is before start {start}")
        return end


@router.post("/download")
def download(
    body: DownloadRequest,
    settings: Settings,
    downloader: Annotated[Downloader, Depends(_downloader)],
) -> dict[str, Any]:
    """Fetch ``symbols`` through the providers in order and merge them into the folder;
    dates already stored are kept. 404 for an unknown provider (before any request)."""
    order = body.providers or list(settings.providers)
    try:
        report = downloader.download(
            DataDir(settings.data_dir), body.symbols, body.start, body.end, order
        )
    except UnknownNameError as exc:
        raise HTTPException(404, str(exc)) from None
    return {
        "added": report.added,
        "sources": report.sources,
        "failures": report.failures,
        "missing": report.missing,
    }


def _runs(store: str) -> list[RunInfo]:
    """The runs of the store (none when it does not exist yet)."""
    try:
        opened = RunStore(store, create=False)
    except MissingFileError:
        return []
    try:
        return opened.runs()
    finally:
        opened.close()


def _uses(spec: dict[str, Any], folder: Path) -> bool:
    """Whether a run's data is ``folder`` (or a file inside it)."""
    source = Path(str(spec.get("data", "")))
    if not source.exists():
        return False
    resolved = source.resolve()
    return resolved == folder or folder in resolved.parents


def _dependents(settings: ServiceSettings, rows: list[RangeRows]) -> list[str]:
    """Each stored run that depends on some of ``rows``, in words."""
    folder = Path(settings.data_dir).resolve()
    out = []
    for run in _runs(settings.store):
        if not _uses(run.spec, folder):
            continue
        end = str(run.spec.get("end"))
        hit = [r for r in rows if r.rows and r.symbol in run.symbols and str(r.first_date) <= end]
        if hit:
            named = ", ".join(f"{r.symbol} from {r.first_date}" for r in hit)
            out.append(f"run {run.run_id!r} (data through {end}) uses {named}")
    return out


@router.delete("/range")
def delete_range(
    settings: Settings,
    symbols: Annotated[str, Query(description="comma-separated symbols", min_length=1)],
    start: Annotated[str | None, Query(pattern=_DATE, description="default: the first")] = None,
    end: Annotated[str | None, Query(pattern=_DATE, description="default: the last")] = None,
    force: bool = False,
) -> dict[str, Any]:
    """Delete the rows of ``symbols`` dated in ``[start, end]``: 409 (naming the runs) when a
    stored run depends on them, unless ``force``; 404 for a symbol without data."""
    chosen = _symbols(symbols) or []
    if start is not None and end is not None and end < start:
        raise HTTPException(422, f"invalid request: end: {end} is before start {start}")
    data = DataDir(settings.data_dir)
    _known(data, chosen)
    rows = data.rows_in_range(chosen, start, end)
    dependents = _dependents(settings, rows)
    if dependents and not force:
        raise HTTPException(
            409,
            "refused: stored runs depend on these rows (" + "; ".join(dependents) + "); "
            "pass force=true to delete them anyway",
        )
    deleted = data.delete_range(chosen, start, end)
    return {"deleted": deleted, "forced_over": dependents if force else []}
