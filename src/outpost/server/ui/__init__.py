"""The web UI: server-rendered pages (Jinja2), a little plain JavaScript, live updates by server-sent
events. Pages call the same store functions as the API. See docs/ui.md."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from outpost.server.ui import accounts, auth, builds, events, integrations, pipelines, runtimes, triggers
from outpost.server.ui.rendering import STATIC_PREFIX


def install(app: FastAPI) -> None:
    for module in (auth, builds, events, pipelines, runtimes, triggers, integrations, accounts):
        app.include_router(module.router)
    static = resources.files("outpost.server.ui") / "static"
    app.mount(STATIC_PREFIX, StaticFiles(directory=str(static)), name="ui-static")
