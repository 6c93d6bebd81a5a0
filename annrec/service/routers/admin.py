"""Admin: ``POST /v1/admin/reload`` (load the artifacts anew beside the served ones, swap atomically)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter

from annrec.errors import AnnrecError
from annrec.service import schemas as S
from annrec.service.deps import ADMIN, JsonRoute, Metrics, Reg, Settings
from annrec.service.errors import ERR, ApiError

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=ADMIN, route_class=JsonRoute)


@router.post("/reload", response_model=S.ReloadResponse, responses={401: ERR, 403: ERR, 409: ERR},
             summary="Load the artifacts anew beside the served ones and swap atomically")
async def reload(reg: Reg, settings: Settings, metrics: Metrics) -> S.ReloadResponse:
    try:
        snap, secs = await anyio.to_thread.run_sync(reg.reload)
    except AnnrecError as e:
        metrics.reloads.labels("failed").inc()
        raise ApiError(409, "conflict", f"reload failed, still serving generation {reg.snapshot.generation}: "
                                        f"{e}") from None
    metrics.reloads.labels("ok").inc()
    if settings.workers > 1:
        await anyio.to_thread.run_sync(reg.publish_reload)
    return S.ReloadResponse(generation=snap.generation, indexes=sorted(snap.indexes), seconds=round(secs, 4),
                            skipped=list(snap.errors))
