"""`GET /api/v1/health`: whether the control plane answers, and its version (no token)."""

from __future__ import annotations

from fastapi import APIRouter

from outpost import __version__
from outpost.server.api.schemas.health import Health

router = APIRouter(prefix="/api/v1", tags=["api"])


@router.get("/health")
async def health() -> Health:
    return Health(status="ok", version=__version__)
