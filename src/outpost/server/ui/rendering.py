"""Pages: the Jinja2 environment, its filters, the response headers every page gets, and the route class
that turns refusals into pages (a store error becomes an HTML error page; no session, the login form)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from outpost import __version__
from outpost.errors import StoreError
from outpost.server.store.accounts import rank
from outpost.server.ui.sessions import LoginRequired, Viewer, as_viewer

STATIC_PREFIX = "/ui/static"
FINAL = ("success", "failure", "error", "terminated", "skipped", "approved", "denied")
# Inline style attributes only for 256-colour and true-colour log spans; everything else comes from files.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # pages carry CSRF tokens and, on some, secrets shown once
}


def _static_version() -> str:
    """A hash of the static files, so browsers fetch them again after an upgrade."""
    digest = hashlib.sha256(__version__.encode())
    folder = resources.files("outpost.server.ui") / "static"
    for item in sorted(folder.iterdir(), key=lambda i: i.name):
        if item.is_file():
            digest.update(item.read_bytes())
    return digest.hexdigest()[:12]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def span(started: float | None, finished: float | None) -> str:
    if started is None:
        return ""
    return duration((finished or time.time()) - started)


def when(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(t: float | None, now: float | None = None) -> str:
    """How long ago, in words a person skims: `just now`, `5 min ago`, `3 h ago`, `2 days ago`."""
    if t is None:
        return ""
    s = max(0, int((now if now is not None else time.time()) - t))
    if s < 45:
        return "just now"
    if s < 3600:
        return f"{max(1, round(s / 60))} min ago"
    if s < 86400:
        return f"{s // 3600} h ago"
    days = s // 86400
    return f"{days} day{'s' if days != 1 else ''} ago"


def iso(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def status_label(status: str) -> str:
    return {"pending-approval": "waiting for approval", "claimed": "starting"}.get(status, status)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("outpost.server.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    version = _static_version()
    env.globals.update(
        static=lambda path: f"{STATIC_PREFIX}/{path}?v={version}",
        version=__version__,
        FINAL=FINAL,
    )
    env.filters.update(
        duration=duration,
        span=span,
        when=when,
        ago=ago,
        iso=iso,
        label=status_label,
        q=lambda s: quote(str(s), safe=""),
    )
    return env


ENV = _environment()


def can_for(viewer: Viewer | None) -> Callable[[str], bool]:
    """`can("developer")` in templates: pages hide the actions the server would refuse this user anyway."""

    def can(role: str) -> bool:
        return viewer is not None and rank(viewer.principal.role) >= rank(role)

    return can


def render_fragment(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(**context)


def page(
    request: Request, template: str, viewer: Viewer | None, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    html = ENV.get_template(template).render(
        request=request,
        viewer=viewer,
        csrf=viewer.csrf if viewer else "",
        path=request.url.path,
        can=can_for(viewer),
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def see_other(url: str) -> RedirectResponse:
    """After a form: the browser GETs the result page (POST/redirect/GET)."""
    return RedirectResponse(url, status_code=303)


def safe_next(target: str | None) -> str:
    """Only local paths: a login link must not send people to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/builds"
    return target


async def error_page(request: Request, exc: StoreError) -> HTMLResponse:
    """A refusal as a page, with the navigation bar when someone is logged in (a bad link is not a dead end)."""
    viewer: Viewer | None = None
    try:
        async with as_viewer(request) as (_, viewer):
            pass
    except StoreError:
        viewer = None
    return page(request, "error.html", viewer, status_code=exc.status_code, error=exc)


def wants_html(request: Request) -> bool:
    """A browser (asks for text/html, outside the API) gets pages; API clients and scripts get JSON."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


class UiRoute(APIRoute):
    """Every UI route: security headers, the login redirect, and refusals rendered as pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                if not request.url.path.startswith("/ui/"):
                    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    back = here if request.method == "GET" else "/builds"
                    response = RedirectResponse(f"/login?next={quote(back, safe='')}", status_code=303)
                else:
                    response = HTMLResponse("log in first", status_code=401)
            except StoreError as exc:
                response = await error_page(request, exc)
            for name, value in HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return handle
