"""The one place where errors become HTTP answers. Nothing the client sends may produce a 500."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from outpost.errors import StoreError, Unauthorized, Unavailable
from outpost.server.api.schemas.errors import error_body

log = logging.getLogger("outpost.api")


def _code(exc: StoreError) -> str:
    explicit = exc.details.get("error")
    if isinstance(explicit, str):
        return explicit
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


async def store_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StoreError)
    details = {k: v for k, v in exc.details.items() if k != "error"}
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    if isinstance(exc, Unavailable) and "retry_after" in exc.details:
        headers = {"Retry-After": str(exc.details["retry_after"])}
    return JSONResponse(error_body(_code(exc), exc.message, **details), exc.status_code, headers=headers)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    message = "the request is invalid: " + "; ".join(problems[:5])
    return JSONResponse(error_body("invalid_request", message, problems=problems), 422)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse(error_body(f"http_{exc.status_code}", str(exc.detail)), exc.status_code, headers=exc.headers)


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal", "internal error; see the control plane's log"), 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(StoreError, store_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
