"""The account's own pages for its admins: Users (add, give a role, remove) and the Audit log."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from outpost.errors import StoreError
from outpost.server.api.audit import parse_since
from outpost.server.api.schemas.users import UserIn
from outpost.server.passwords import new_password
from outpost.server.store import audit, users
from outpost.server.store.accounts import ADMIN, ROLES, require
from outpost.server.ui.rendering import UiRoute, page, see_other
from outpost.server.ui.sessions import as_viewer, check_csrf, checked, read_form

router = APIRouter(route_class=UiRoute, include_in_schema=False)


async def _users_page(request: Request, *, added: str = "", password: str = "", error: str = "") -> Response:
    async with as_viewer(request) as (session, viewer):
        require(viewer.principal, ADMIN)
        rows = await users.list_users(session, viewer.principal)
    status = 422 if error else 200
    return page(
        request,
        "users.html",
        viewer,
        status_code=status,
        users=rows,
        roles=ROLES,
        added=added,
        password=password,
        error=error,
    )


@router.get("/users")
async def user_list(request: Request) -> Response:
    return await _users_page(request)


@router.post("/users")
async def add_user(request: Request) -> Response:
    """The generated password is shown on this answer only (no redirect: a reload does not make another)."""
    form = await read_form(request)
    password = form.get("password") or new_password()
    try:
        async with as_viewer(request) as (session, viewer):
            check_csrf(viewer, form)
            require(viewer.principal, ADMIN)
            body = checked(UserIn, name=form.get("name").strip(), role=form.get("role"), password=password)
            await users.add_user(session, viewer.principal, body.name, body.role, password)
    except StoreError as exc:
        if exc.status_code in (401, 403):
            raise
        return await _users_page(request, error=exc.message)
    return await _users_page(request, added=body.name, password="" if form.get("password") else password)


@router.post("/users/{name}/remove")
async def remove_user(request: Request, name: str) -> Response:
    form = await read_form(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        require(viewer.principal, ADMIN)
        await users.remove_user(session, viewer.principal, name)
    return see_other("/users")


@router.get("/audit")
async def audit_page(request: Request, since: str = "") -> Response:
    start = parse_since(since) if since else None
    async with as_viewer(request) as (session, viewer):
        require(viewer.principal, ADMIN)
        rows = await audit.entries(session, viewer.principal, since=start, limit=500)
    return page(request, "audit.html", viewer, entries=rows, since=since)
