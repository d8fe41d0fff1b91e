"""Web UI sessions and CSRF protection.

A session is a cookie the server encrypts and authenticates with its secret key (the SecretBox that
seals pipeline secrets: Fernet), holding the user's id, when it was issued and the session's CSRF
token. The server keeps no session list: logging out (or a new password) sets the user's
`sessions_after`, which ends every session issued before it, and a session expires after SESSION_TTL.

Every form carries the CSRF token; a POST without the token of its session is refused with 403. The
login form, which comes before any session, uses a double-submit cookie instead.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qsl

from fastapi import Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from outpost.errors import Forbidden, Invalid, OutpostError, Unauthorized
from outpost.server.models import Account, User
from outpost.server.security import now
from outpost.server.services import Services
from outpost.server.store.accounts import Principal

COOKIE = "outpost_session"
LOGIN_COOKIE = "outpost_login"
SESSION_TTL = 24 * 3600.0


class LoginRequired(Unauthorized):
    """No valid session: pages send the browser to the login form."""


@dataclass(frozen=True)
class Viewer:
    """The logged-in user, as the store sees them (a Principal of their account)."""

    user_id: str
    username: str
    principal: Principal
    csrf: str


@dataclass(frozen=True)
class _Session:
    user_id: str
    issued_at: float
    csrf: str


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def secure_cookies(svc: Services) -> bool:
    return svc.public_url.startswith("https://")


def open_session(svc: Services, response: Response, user: User) -> None:
    payload = json.dumps({"u": user.id, "t": now(), "c": secrets.token_urlsafe(24)})
    response.set_cookie(
        COOKIE,
        svc.secrets.seal(payload),
        max_age=int(SESSION_TTL),
        httponly=True,
        samesite="lax",
        secure=secure_cookies(svc),
        path="/",
    )


def close_session(svc: Services, response: Response) -> None:
    response.delete_cookie(COOKIE, httponly=True, samesite="lax", secure=secure_cookies(svc), path="/")


def _read(svc: Services, value: str | None) -> _Session | None:
    if not value:
        return None
    try:
        data = json.loads(svc.secrets.open(value))
        session = _Session(str(data["u"]), float(data["t"]), str(data["c"]))
    except (OutpostError, ValueError, KeyError, TypeError):
        return None
    return session if now() - session.issued_at < SESSION_TTL else None


@asynccontextmanager
async def as_viewer(request: Request) -> AsyncIterator[tuple[AsyncSession, Viewer]]:
    """A transaction on behalf of the logged-in user (LoginRequired without a live session)."""
    svc = services(request)
    cookie = _read(svc, request.cookies.get(COOKIE))
    if cookie is None:
        raise LoginRequired("log in first")
    async with svc.tx() as session:
        user = await session.get(User, cookie.user_id)
        if user is None or (user.sessions_after is not None and cookie.issued_at <= user.sessions_after):
            raise LoginRequired("your session has ended; log in again")
        account = await session.get_one(Account, user.account_id)
        address = request.client.host if request.client else None
        principal = Principal(
            account.id,
            account.name,
            f"user:{user.id}",
            user.username,
            False,
            user.role,
            user_id=user.id,
            address=address,
        )
        yield session, Viewer(user.id, user.username, principal, cookie.csrf)


# --- forms -----------------------------------------------------------------------------------------


class Form:
    """An application/x-www-form-urlencoded body (parsed here: no multipart dependency for plain forms)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def get(self, name: str, default: str = "") -> str:
        return next((v for k, v in self.pairs if k == name), default)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]

    def checked(self, name: str) -> bool:
        return self.get(name) in ("on", "true", "1", "yes")


async def read_form(request: Request) -> Form:
    body = await request.body()
    if not body:
        return Form([])
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Invalid("forms are sent as application/x-www-form-urlencoded")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise Invalid("the form is not valid UTF-8") from None
    if any("\x00" in k or "\x00" in v for k, v in pairs):
        raise Invalid("NUL characters are not allowed in forms")
    return Form([(k, v.replace("\r\n", "\n")) for k, v in pairs])


def check_csrf(viewer: Viewer, form: Form) -> None:
    if not hmac.compare_digest(form.get("csrf").encode(), viewer.csrf.encode()):
        raise Forbidden("this form is stale or did not come from Outpost (CSRF check failed): reload the page")


def login_token(request: Request) -> str:
    """The login form's double-submit token: reuse the cookie's, or make a new one."""
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)


def set_login_cookie(svc: Services, response: Response, token: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="lax", secure=secure_cookies(svc), path="/"
    )


def check_login_csrf(request: Request, form: Form) -> None:
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not hmac.compare_digest(form.get("csrf").encode(), cookie.encode()):
        raise Forbidden("the login form is stale (CSRF check failed): reload the page and try again")


M = TypeVar("M", bound=BaseModel)


def checked(model: type[M], **values: object) -> M:
    """Form values through the API's own request schema (the same limits), refusals as Invalid."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()]
        raise Invalid("; ".join(problems[:5])) from None
