"""The webhook endpoint Git providers POST to: `POST /webhooks/{trigger_id}`, no API token. It reads the body
(capped) and answers what `server/deliveries.py` decided; the table of answers is there."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from outpost.errors import TooLarge
from outpost.server import deliveries
from outpost.server.api.deps import Svc
from outpost.server.security import now

router = APIRouter(tags=["webhooks"])

PREFIX = "/webhooks/"
MAX_BODY = 25 * 1024 * 1024  # GitHub's own cap on a delivery's payload
REPLAY_HEADER = "Outpost-Redelivery"


@router.post("/webhooks/{trigger_id}", response_model=None)
async def receive(trigger_id: str, request: Request, svc: Svc) -> JSONResponse:
    body = await _read_capped(request)
    answer = await deliveries.deliver(svc, trigger_id, request.headers, body, now())
    svc.metrics.webhooks.labels("replay" if answer.replay else str(answer.body.get("outcome", "unknown"))).inc()
    return JSONResponse(answer.body, answer.status_code, headers={REPLAY_HEADER: "true"} if answer.replay else None)


async def _read_capped(request: Request) -> bytes:
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY:
            raise TooLarge(f"a webhook body may hold at most {MAX_BODY} bytes", max_bytes=MAX_BODY)
    return bytes(body)
