"""Logging in and out of the web UI."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request, Response

from outpost.server.models import User
from outpost.server.security import now
from outpost.server.store import users
from outpost.server.ui.lockout import LoginLockout
from outpost.server.ui.rendering import UiRoute, page, safe_next, see_other
from outpost.server.ui.sessions import (
    LOGIN_COOKIE,
    as_viewer,
    check_csrf,
    check_login_csrf,
    close_session,
    login_token,
    open_session,
    read_form,
    services,
    set_login_cookie,
)

router = APIRouter(route_class=UiRoute, include_in_schema=False)


def _login_page(request: Request, next_: str, *, username: str = "", error: str = "", status: int = 200) -> Response:
    token = login_token(request)
    response = page(
        request, "login.html", None, status_code=status, login_csrf=token, next=next_, username=username, error=error
    )
    set_login_cookie(services(request), response, token)
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "") -> Response:
    return _login_page(request, safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await read_form(request)
    check_login_csrf(request, form)
    username, password, next_ = form.get("username").strip(), form.get("password"), safe_next(form.get("next"))
    svc = services(request)
    lockout: LoginLockout = request.app.state.login_lockout
    address = request.client.host if request.client else "unknown"
    if wait := await lockout.check(address, username):
        seconds = max(1, math.ceil(wait))
        error = f"Too many failed logins for this user from your address: try again in {seconds} s."
        response = _login_page(request, next_, username=username, error=error, status=429)
        response.headers["Retry-After"] = str(seconds)
        return response
    async with svc.tx() as session:
        user = await users.authenticate(session, username, password) if username and password else None
    if user is None:
        if username:
            await lockout.record_failure(address, username)
        return _login_page(request, next_, username=username, error="Wrong username or password.", status=401)
    await lockout.record_success(address, username)
    response = see_other(next_)
    open_session(svc, response, user)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await read_form(request)
    async with as_viewer(request) as (session, viewer):
        check_csrf(viewer, form)
        user = await session.get_one(User, viewer.user_id)
        user.sessions_after = now()
    response = see_other("/login")
    close_session(services(request), response)
    return response
