"""The web UI: server-rendered pages (Jinja2), a little plain JavaScript, live updates by server-sent
events. Pages call the same store functions as the API. See docs/ui.md."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from outpost.errors import NotFound
from outpost.server.api.errors import http_error
from outpost.server.ui import (
    accounts,
    auth,
    badges,
    builds,
    clusters,
    events,
    integrations,
    pipelines,
    runtimes,
    triggers,
)
from outpost.server.ui.rendering import HEADERS, STATIC_PREFIX, error_page, wants_html


async def unknown_path(request: Request, exc: Exception) -> Response:
    """A path nothing answers: a page with the navigation bar for a browser, the API's JSON for everyone else."""
    assert isinstance(exc, HTTPException)
    if exc.status_code != 404 or not wants_html(request):
        return await http_error(request, exc)
    response = await error_page(request, NotFound(f"there is no page at {request.url.path}"))
    response.headers.update(HEADERS)
    return response


def install(app: FastAPI) -> None:
    # clusters before integrations: its /integrations/cluster/{name}/edit wins over the git/registry {kind} one
    for module in (auth, builds, events, pipelines, runtimes, triggers, clusters, integrations, accounts, badges):
        app.include_router(module.router)
    static = resources.files("outpost.server.ui") / "static"
    app.mount(STATIC_PREFIX, StaticFiles(directory=str(static)), name="ui-static")
    app.add_exception_handler(HTTPException, unknown_path)  # replaces the API's handler, and defers to it
