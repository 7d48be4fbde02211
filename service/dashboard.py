"""The dashboard: a web page at ``/`` over the service's own REST API.

The page (``static/index.html``, ``dashboard.js``, ``dashboard.css``) shows the leaderboard,
interactive equity and drawdown curves of the runs, the positions and allocation over time of
a chosen run, the job list with start, resume, continue and cancel, and the data coverage.
Its charts use plotly.js from the installed ``plotly`` package (``/static/plotly.min.js``),
never a CDN, so the page works without the internet.

The page and its files hold no data and load without a token; everything on it comes from the
API, which needs the token when the server has one: the page asks for it, keeps it in
``sessionStorage`` (the browser tab's, gone when the tab closes) and sends it as a Bearer
header.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import HTTPException
from fastapi.responses import FileResponse

from marketarena.service.app import PublicRouter

router = PublicRouter(tags=["dashboard"], include_in_schema=False)

STATIC = Path(str(resources.files("marketarena.service").joinpath("static")))
PLOTLY_JS = Path(str(resources.files("plotly").joinpath("package_data", "plotly.min.js")))
_FILES = {
    "dashboard.js": (STATIC / "dashboard.js", "text/javascript"),
    "dashboard.css": (STATIC / "dashboard.css", "text/css"),
    "plotly.min.js": (PLOTLY_JS, "text/javascript"),
}
#: browsers may keep the files for an hour; the page itself is always asked for again
_CACHE = {"Cache-Control": "public, max-age=3600"}


@router.get("/")
def page() -> FileResponse:
    """The dashboard's page."""
    no_cache = {"Cache-Control": "no-cache"}
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=no_cache)


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    """One of the page's files (404 for any other name: nothing else is served)."""
    found = _FILES.get(name)
    if found is None:
        raise HTTPException(404, f"no static file {name!r}; files: {sorted(_FILES)}")
    path, media_type = found
    return FileResponse(path, media_type=media_type, headers=_CACHE)
