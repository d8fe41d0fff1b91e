"""The control plane tries the runner protocol's and the build routes first (app._try_first, for speed). That is only
safe while no path of theirs is also another route's: the reorder would change which route answers it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.routing import APIRoute

from outpost.server.api import builds, runner
from outpost.server.app import create_app
from tests.stack import settings_for


def _leaves(routes: Any) -> list[APIRoute]:
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (inner := getattr(route, "original_router", None)) is not None:
            found.extend(_leaves(inner.routes))
    return found


def _example(route: APIRoute) -> str:
    """A path the route answers: each parameter given a value (a `:path` one with a slash in it)."""
    return re.sub(r"\{(\w+)(:path)?\}", lambda m: "x/y" if m.group(2) else "x", route.path_format)


def test_the_routes_tried_first_share_no_path_and_method_with_any_other_route(tmp_path: Path) -> None:
    app = create_app(settings_for(f"sqlite+aiosqlite:///{tmp_path}/o.db", tmp_path))
    first = app.router.routes[:2]
    assert [getattr(r, "original_router", None) for r in first] == [runner.router, builds.router]
    hot = _leaves(first)
    others = _leaves(app.router.routes[2:])
    assert len(hot) > 10
    assert len(others) > 50
    clashes = [
        (route.path, other.path)
        for route in hot
        for other in others
        if other.path_regex.match(_example(route)) and (route.methods or set()) & (other.methods or set())
    ]
    assert clashes == []
    # The check can see a clash: the build list's own path is matched by the build list route.
    listing = next(r for r in hot if r.path_format == "/api/v1/builds")
    assert any(o.path_regex.match(_example(listing)) for o in hot)
