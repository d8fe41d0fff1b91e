"""The audit log in the public API (/api/v1/audit), for admins: newest first, optionally since a time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from outpost.errors import Invalid
from outpost.server.api.deps import AsAdmin, Svc
from outpost.server.api.schemas.audit import AuditOut
from outpost.server.models import Account
from outpost.server.security import now
from outpost.server.store import audit
from outpost.server.store.accounts import parse_duration

router = APIRouter(prefix="/api/v1", tags=["audit"])


def parse_since(text: str) -> float:
    """A duration back from now (`1h`, `30d`) or an ISO 8601 time (UTC unless it says otherwise)."""
    if text[:1].isdigit() and text[-1:] in "smhdw" and not text[-1:].isdigit():
        return now() - parse_duration(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(
            f"--since is a duration such as 1h or 7d, or an ISO time such as 2026-12-01T10:00; not {text!r}"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@router.get("/audit")
async def list_audit(
    token: AsAdmin,
    svc: Svc,
    since: Annotated[str | None, Query(min_length=1, max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE)] = 200,
) -> list[AuditOut]:
    start = parse_since(since) if since else None
    async with svc.as_caller(token) as (session, who):
        rows = await audit.entries(session, who, since=start, limit=limit)
        names = {a.id: a.name for a in await session.scalars(select(Account))}
        return [AuditOut.read(e, account=names.get(e.account_id) if e.account_id else None) for e in rows]
