"""Request dependencies: the services and the bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from outpost.errors import Unauthorized
from outpost.server.services import Services


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token: send `Authorization: Bearer TOKEN`")
    return token.strip()


Svc = Annotated[Services, Depends(services)]
Token = Annotated[str, Depends(bearer)]
