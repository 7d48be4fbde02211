"""The FastAPI application: authentication, request limits, error shapes, and the routers.

Every response to a refused request is JSON ``{"error": message}`` (with ``"fields"`` for a
validation error: each field's location and what is wrong), never a traceback:

- 401: a token is configured and the request has none or another (``Authorization: Bearer
  <token>``); the token is compared in constant time and never echoed or logged.
- 413: the body is larger than ``max_body_bytes`` (checked on ``Content-Length`` and on the
  bytes actually read).
- 422: the request does not validate; the message names the fields.
- 400: a user mistake the library reports (:class:`~marketarena.envs.errors.MarketArenaError`:
  a bad agent spec, dates, rules...), with its one-line message.
- 404 / 409: a missing resource, a conflicting job (raised by the routes).

OpenAPI docs at ``/docs``; ``/health`` answers without a token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from marketarena.envs.errors import MarketArenaError
from marketarena.service.settings import ServiceSettings

_bearer = HTTPBearer(auto_error=False)


def settings_of(request: Request) -> ServiceSettings:
    """The app's settings (a dependency for routes)."""
    settings: ServiceSettings = request.app.state.settings
    return settings


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the request carries the configured token (nothing to check without one)."""
    expected = settings_of(request).token
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "error": e["msg"]}
        for e in exc.errors()
    ]


def create_app(settings: ServiceSettings) -> FastAPI:
    """The app over ``settings``; routers for runs, jobs, data and the dashboard are added by
    :func:`include_routers`."""
    app = FastAPI(
        title="marketarena",
        description="Simulations, runs, positions and data of marketarena, as a service.",
        version="1",
    )
    app.state.settings = settings

    @app.middleware("http")
    async def limit_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return JSONResponse(
                {"error": f"request body of {declared} bytes is over the {limit}-byte limit"},
                status_code=413,
            )
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            body = await request.body()  # cached by Starlette for the route
            if len(body) > limit:
                return JSONResponse(
                    {"error": f"request body of {len(body)} bytes is over the {limit}-byte limit"},
                    status_code=413,
                )
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _field_errors(exc)
        named = "; ".join(f"{f['field'] or 'body'}: {f['error']}" for f in fields)
        return JSONResponse({"error": f"invalid request: {named}", "fields": fields}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(MarketArenaError)
    async def user_error(request: Request, exc: MarketArenaError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.get("/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness: answers without a token."""
        return {"status": "ok"}

    include_routers(app)
    return app


class PublicRouter(APIRouter):
    """A router whose routes need no token: the dashboard's page and static files, which hold
    no data (the page asks the API, with the token, for everything it shows)."""


def include_routers(app: FastAPI) -> None:
    """Every router of the service, each behind the token check (but a :class:`PublicRouter`)."""
    auth = [Depends(require_token)]
    for router in _routers():
        app.include_router(router, dependencies=[] if isinstance(router, PublicRouter) else auth)


def _routers() -> list[Any]:
    """The service's routers (each module defines ``router``; imported here, as they import
    this module)."""
    from marketarena.service import dashboard, jobs, routes_data, routes_runs

    return [
        jobs.router,
        routes_runs.router,
        routes_data.router,
        dashboard.router,
    ]
