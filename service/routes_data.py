"""The ``/data`` endpoints: the downloaded data directory, its coverage, downloads, deletions.

The folder is ``settings.data_dir`` (see :mod:`marketarena.envs.providers` for its format).

- ``GET /data/coverage?symbols=A,B``: per symbol first/last date, rows and gaps.
- ``GET /data/status``: symbols, the date span, rows, bytes on disk, the last download of
  each provider, and the providers available.
- ``POST /data/download`` ``{"symbols", "start", "end", "providers"}``: fetch through the
  providers in that fallback order (default ``settings.providers``), each under its rate
  limit (``settings.provider_limits``); every failure is in the response.
- ``DELETE /data/range?symbols=A,B&start=&end=[&force=true]``: delete those rows. Refused with
  409 when a stored run depends on them, unless ``force=true``: when the folder, as the
  deletion would leave it, would no longer give a run on it the data it was computed on (its
  ``data_sha256``, from the first date through its end, which continuing the run checks).

An unknown symbol or provider is a 404 naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator

from marketarena.envs.data import MarketData, from_long_frame
from marketarena.envs.errors import DataError, MissingFileError, UnknownNameError
from marketarena.envs.providers import SYMBOL_PATTERN, DataDir, Downloader, available_providers
from marketarena.evaluation.saved_runs.store import RunInfo, RunStore
from marketarena.service.app import settings_of
from marketarena.service.cache import cache_of
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


@router.get("/coverage", response_model=list[dict[str, Any]])
def coverage(
    request: Request,
    settings: Settings,
    symbols: Annotated[str | None, Query(description="comma-separated; default all")] = None,
) -> Response:
    """Per symbol: first and last date, rows, and gaps (dates inside its span on which other
    symbols of the folder have bars and it has none)."""
    data = DataDir(settings.data_dir)
    chosen = _symbols(symbols)
    if chosen is not None:
        _known(data, chosen)

    def compute() -> list[dict[str, Any]]:
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

    key = ("data/coverage", str(data.path), tuple(chosen or ()), data.signature())
    return cache_of(request).response(key, compute)


@router.get("/status", response_model=dict[str, Any])
def status(request: Request, settings: Settings) -> Response:
    """The folder's symbols, date span, rows and size, the last download per provider, and
    the providers (their fallback order by default and every one installed)."""
    data = DataDir(settings.data_dir)

    def compute() -> dict[str, Any]:
        providers = {"default_order": list(settings.providers), "available": available_providers()}
        return {**data.status(), "providers": providers}

    installed = tuple(sorted(available_providers()))
    key = ("data/status", str(data.path), settings.providers, installed, data.signature())
    return cache_of(request).response(key, compute)


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


def _dependents(
    settings: ServiceSettings, data: DataDir, symbols: list[str], start: str | None, end: str | None
) -> list[str]:
    """Each stored run on this folder that deleting the range would break, in words.

    A run stores the hash of its data from the first date through its end (``data_sha256``,
    checked when it continues): the folder as the deletion would leave it is loaded as the
    run loads it (its universe selected) and hashed the same way. A run breaks when that
    data no longer loads (e.g. a symbol left with holes), lacks one of its symbols, or hashes
    differently. A run on one file of the folder breaks when that file loses rows.
    """
    folder = data.path.resolve()
    runs = [r for r in _runs(settings.store) if _uses(r.spec, folder)]
    rows = {r.symbol: r for r in data.rows_in_range(symbols, start, end) if r.rows}
    if not runs or not rows:
        return []
    after: MarketData | None = None
    broken = ""
    try:
        frame = data.frame_without(symbols, start, end)
        after = from_long_frame(frame, name=data.path.name) if len(frame) else None
    except DataError as exc:
        broken = str(exc).splitlines()[0]
    deleted = ", ".join(f"{r.symbol} {r.first_date}..{r.last_date}" for r in rows.values())
    out = []
    for run in runs:
        spec_end = str(run.spec.get("end"))
        label = f"run {run.run_id!r} (data through {spec_end})"
        if Path(str(run.spec["data"])).resolve() != folder:
            if Path(str(run.spec["data"])).stem in rows:
                out.append(f"{label} reads that file ({deleted})")
            continue
        if after is None:
            out.append(f"{label}: the folder would no longer load ({broken or 'no rows left'})")
            continue
        lost = [s for s in run.symbols if s not in after.symbols]
        if lost:
            out.append(f"{label}: its symbol(s) {lost} would be gone")
            continue
        try:  # the hash start_backtest stores: the run's symbols, first date through end
            changed = after.select(run.symbols).slice(
                None, spec_end
            ).content_hash() != run.spec.get("data_sha256")
        except DataError:
            changed = True
        if changed:
            out.append(f"{label}: its data up to {spec_end} would change ({deleted})")
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
    dependents = _dependents(settings, data, chosen, start, end)
    if dependents and not force:
        raise HTTPException(
            409,
            "refused: stored runs depend on these rows (" + "; ".join(dependents) + "); "
            "pass force=true to delete them anyway",
        )
    deleted = data.delete_range(chosen, start, end)
    return {"deleted": deleted, "forced_over": dependents if force else []}
