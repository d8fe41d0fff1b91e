"""Build-status badges for READMEs: `/badge/KEY/PIPELINE.svg?branch=main`, public by design and opt-in per
pipeline. The key is an unguessable capability made when an admin turns the badge on (and replaced or
dropped by them): without it nothing says whether a pipeline exists. An unknown key and an unknown pipeline
answer the same 404."""

from __future__ import annotations

from typing import Annotated
from xml.sax.saxutils import escape

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select

from outpost.errors import Invalid, NotFound
from outpost.server.models import Build, Pipeline
from outpost.server.security import new_token
from outpost.server.store import audit, pipelines
from outpost.server.store.accounts import ADMIN, require
from outpost.server.ui.rendering import UiRoute, see_other
from outpost.server.ui.sessions import as_viewer, check_csrf, read_form, services
from outpost.wire import FINAL_BUILD_STATUSES

router = APIRouter(route_class=UiRoute, include_in_schema=False)
BADGE_PREFIX = "obadge_"
COLOURS = {"success": "#2e7d32", "failure": "#c62828", "error": "#c62828", "terminated": "#757575"}
WORDS = {"success": "passing", "failure": "failing", "error": "error", "terminated": "cancelled"}
NO_BADGE = "no such badge"  # one answer for an unknown key, an unknown pipeline and a badge turned off


def svg(label: str, value: str, colour: str) -> str:
    """A flat two-part badge; widths from the character count (a monospace-ish estimate is enough)."""
    left, right = 6 * len(label) + 12, 6 * len(value) + 12
    label, value = escape(label), escape(value)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + right}" height="20" role="img" '
        f'aria-label="{label}: {value}"><title>{label}: {value}</title>'
        f'<rect width="{left}" height="20" fill="#555"/><rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        '<g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" text-anchor="middle">'
        f'<text x="{left / 2}" y="14">{label}</text><text x="{left + right / 2}" y="14">{value}</text></g></svg>'
    )


@router.get("/badge/{key}/{file}")
async def badge(request: Request, key: str, file: str, branch: Annotated[str, Query(max_length=255)] = "") -> Response:
    name = file.removesuffix(".svg")
    if not file.endswith(".svg") or not key.startswith(BADGE_PREFIX) or len(key) > 64:
        raise NotFound(NO_BADGE)
    async with services(request).tx() as session:
        pipeline = await session.scalar(select(Pipeline).where(Pipeline.badge_key == key, Pipeline.name == name))
        if pipeline is None:
            raise NotFound(NO_BADGE)
        query = select(Build.status).where(Build.pipeline_id == pipeline.id, Build.status.in_(FINAL_BUILD_STATUSES))
        if branch:
            query = query.where(Build.branch == branch)
        status = await session.scalar(query.order_by(Build.created_at.desc(), Build.id.desc()).limit(1))
    body = svg("build", WORDS.get(status or "", "unknown"), COLOURS.get(status or "", "#9e9e9e"))
    # Never cached: a README shows the status now (GitHub's image proxy honours no-cache).
    return Response(body, media_type="image/svg+xml", headers={"Cache-Control": "no-cache, max-age=0"})


@router.post("/pipelines/{name}/badge")
async def set_badge(request: Request, name: str) -> Response:
    """Admins turn a pipeline's badge on (a new key: an old one stops working) or off."""
    form = await read_form(request)
    action = form.get("action", "")
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, ADMIN)
        pipeline = await pipelines.get_pipeline(session, viewer.principal, name)
        if action not in ("enable", "disable"):
            raise Invalid("the badge action is enable or disable")
        pipeline.badge_key = new_token(BADGE_PREFIX) if action == "enable" else None
        await audit.record(session, viewer.principal, f"pipeline.badge.{action}", f"pipeline {name}", pipeline=name)
    return see_other(f"/pipelines/{name}#badge")
