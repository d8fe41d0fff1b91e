"""Request dependencies: the services, the bearer token, and the role each public route needs.

Every public API route declares what it needs with one of the `As*` annotations below: the token is
authenticated and a caller without that role refused (403, naming the role) before the request body is
looked at. The handler's first `svc.as_caller(access)` takes that proof instead of reading the token again; its
later transactions (a log follow's, a git query's wait) authenticate again, so a revocation ends them.

The `*Now` annotations go further, for routes whose handler begins with `async with svc.as_caller(token)`: the
check's transaction stays open and is the handler's first transaction (one transaction a request instead of
two: the build request's statements and the token check commit together, and a token revoked before that
commit is refused by it). FastAPI reads the body before it solves the dependencies, so the open transaction
never waits for a client; it is rolled back if the handler does not take it (a 422, an error before it).
Runner-protocol routes take the runner's or the job's token (`Token`) and webhooks their signature: those
are not API tokens and have no role.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from fastapi import Depends, Request

from outpost.errors import Unauthorized
from outpost.server.services import Opened, Services
from outpost.server.store.accounts import ADMIN, DEVELOPER, VIEWER, Principal


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token: send `Authorization: Bearer TOKEN`")
    return token.strip()


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


@dataclass(frozen=True)
class Access:
    """An API token and what the route needs of it: a role, and whether a token scoped to one pipeline
    may call it at all (the store then keeps such a token to that pipeline's objects)."""

    token: str
    role: str
    scoped: bool
    address: str | None
    superuser: bool = False  # only the installation's superuser token
    # What the dependency's check proved, for the request's first transaction only (`Services.as_caller` takes it
    # out): reading the token again a moment later cost a query and ~1 ms a request; a later transaction of the
    # same request reads it again.
    proof: list[Principal] = field(default_factory=list, compare=False, repr=False)
    # The `*Now` dependencies: the check's transaction, still open, for the handler's first `as_caller` to take.
    opened: list[Opened] = field(default_factory=list, compare=False, repr=False)


def needs(
    role: str, *, scoped: bool = False, superuser: bool = False
) -> Callable[[Request], Coroutine[Any, Any, Access]]:
    async def dependency(request: Request) -> Access:
        access = Access(bearer(request), role, scoped, client_address(request), superuser)
        # Checked here as well as in the handler's own transaction: FastAPI runs dependencies before it
        # validates the body, so a caller without the role gets 401/403, never a 422 that probes the schema.
        async with services(request).as_caller(access) as (_session, principal):
            pass
        return replace(access, proof=[principal])

    return dependency


def needs_now(
    role: str, *, scoped: bool = False, superuser: bool = False
) -> Callable[[Request], AsyncIterator[Access]]:
    """As `needs`, and the transaction that checked the token is handed to the handler (see the module's
    docstring): only for a handler whose first await is `svc.as_caller(token)`."""

    async def dependency(request: Request) -> AsyncIterator[Access]:
        access = Access(bearer(request), role, scoped, client_address(request), superuser)
        async with services(request).open_as_caller(access) as opened:
            yield replace(access, opened=[opened])

    return dependency


# The dependencies themselves are coroutines: FastAPI runs a plain function's dependency in a worker thread, two
# thread hand-overs per request for a dictionary lookup (py-spy: ~25 % of a held poll's renewal).
async def _services(request: Request) -> Services:
    return services(request)


async def _bearer(request: Request) -> str:
    return bearer(request)


Svc = Annotated[Services, Depends(_services)]
Token = Annotated[str, Depends(_bearer)]  # a runner's or a job's token (the runner protocol)
AsViewer = Annotated[Access, Depends(needs(VIEWER))]
AsDeveloper = Annotated[Access, Depends(needs(DEVELOPER))]
AsAdmin = Annotated[Access, Depends(needs(ADMIN))]
AsSuperuser = Annotated[Access, Depends(needs(ADMIN, superuser=True))]
# Routes a pipeline-scoped token may call too: its pipeline's reading and running.
ScopedViewer = Annotated[Access, Depends(needs(VIEWER, scoped=True))]
ScopedDeveloper = Annotated[Access, Depends(needs(DEVELOPER, scoped=True))]
# Closed when the handler returns (scope "function"), before the answer is sent: a transaction the handler did not
# take is never held while the answer goes out.
AsDeveloperNow = Annotated[Access, Depends(needs_now(DEVELOPER), scope="function")]
ScopedViewerNow = Annotated[Access, Depends(needs_now(VIEWER, scoped=True), scope="function")]
ScopedDeveloperNow = Annotated[Access, Depends(needs_now(DEVELOPER, scoped=True), scope="function")]
