"""Probes: ``/health`` (the process is alive), ``/ready`` (artifacts loaded), ``/metrics`` (Prometheus)."""

from __future__ import annotations

import os

import anyio.to_thread
from fastapi import APIRouter, Depends, Request, Response

from annrec.service import schemas as S
from annrec.service.deps import JsonRoute, Metrics, Reg, require_metrics
from annrec.service.errors import ERR

router = APIRouter(tags=["probes"], route_class=JsonRoute)


@router.get("/health", response_model=S.Health, summary="The process is alive")
async def health() -> S.Health:
    return S.Health()


@router.get("/ready", response_model=S.Ready, summary="Artifacts are loaded", responses={503: {"model": S.Ready}})
async def ready(request: Request, reg: Reg, response: Response) -> S.Ready:
    snap = reg.snapshot
    ok = bool(request.app.state.ready) and bool(snap.indexes)
    response.status_code = 200 if ok else 503
    return S.Ready(status="ready" if ok else "loading", indexes=len(snap.indexes), generation=snap.generation,
                   worker=os.getpid())


@router.get("/metrics", summary="Prometheus metrics", dependencies=[Depends(require_metrics)],
            response_class=Response, responses={200: {"content": {"text/plain": {}}}, 401: ERR})
async def prometheus_metrics(metrics: Metrics) -> Response:
    # in a thread: the index-size collector may wait for an index's read lock
    return Response(await anyio.to_thread.run_sync(metrics.render), media_type=metrics.content_type)
