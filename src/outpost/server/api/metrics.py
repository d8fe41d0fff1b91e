"""`GET /metrics`: the control plane's Prometheus metrics (server/metrics.py says what they are).

They name accounts and runtimes, so nobody reads them anonymously: the caller sends the scrape token
(OUTPOST_METRICS_TOKEN, good for this route only) or the installation's superuser token.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from outpost.server.api.deps import Access, Svc, bearer, client_address
from outpost.server.store.accounts import ADMIN

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, svc: Svc) -> Response:
    token = bearer(request)
    scrape_token = svc.settings.metrics_token
    if not (scrape_token and hmac.compare_digest(token.encode(), scrape_token.encode())):
        async with svc.as_caller(Access(token, ADMIN, False, client_address(request), superuser=True)):
            pass  # 401 for an unknown token, 403 for any but the superuser's
    await svc.metrics.refresh()
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
