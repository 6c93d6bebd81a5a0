"""Writes (admin key): upsert items, delete an item; each committed to the index's write-ahead log before the answer."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter

from annrec._validate import as_matrix, normalize_ids
from annrec.errors import InputError
from annrec.service import schemas as S
from annrec.service.deps import ADMIN, IndexName, ItemIdPath, JsonRoute, Metrics, Reg, Settings
from annrec.service.errors import BODY_ERRORS, READ_ERRORS, WRITE_ERRORS
from annrec.service.limits import check_limits, check_metadata
from annrec.service.storage import Write

router = APIRouter(prefix="/v1/indexes", tags=["writes"], dependencies=ADMIN, route_class=JsonRoute)


@router.put("/{name}/items", response_model=S.WriteResponse, response_model_exclude_none=True,
            responses={**BODY_ERRORS, **WRITE_ERRORS},
            summary="Insert or replace items (vectors, ids, metadata); logged before the answer")
async def upsert(name: IndexName, body: S.UpsertRequest, reg: Reg, settings: Settings,
                 metrics: Metrics) -> S.WriteResponse:
    check_limits(settings, batch=len(body.items), ids={"items": [it.id for it in body.items]})
    check_metadata(settings, body.items)
    dim = reg.get(name).index.dim
    for i, it in enumerate(body.items):
        if len(it.vector) != dim:
            raise InputError(f"item {i} (id {it.id!r}) has a vector of dimension {len(it.vector)} but index "
                             f"{name!r} expects {dim}")
    vectors = as_matrix([it.vector for it in body.items], dim=dim, name="item vectors")
    ids = normalize_ids([it.id for it in body.items], "item ids")
    meta = {it.id: it.metadata for it in body.items if it.metadata is not None} or None

    def go() -> S.WriteResponse:
        srv, w = reg.write(name, Write("upsert", ids.tolist(), vectors, meta))
        metrics.writes.labels(srv.name, "upsert").inc(len(ids))
        return S.WriteResponse(index=srv.name, upserted=len(ids), count=len(srv.index), persisted=srv.store.durable,
                               seq=w.seq)

    return await anyio.to_thread.run_sync(go)  # not in the search pool: a commit waits for an fsync


@router.delete("/{name}/items/{item_id}", response_model=S.WriteResponse, response_model_exclude_none=True,
               responses={**READ_ERRORS, **WRITE_ERRORS}, summary="Delete an item; logged before the answer")
async def delete_item(name: IndexName, item_id: ItemIdPath, reg: Reg,
                      metrics: Metrics) -> S.WriteResponse:
    reg.get(name)

    def go() -> S.WriteResponse:
        srv, w = reg.write(name, Write("delete", [item_id]))
        metrics.writes.labels(srv.name, "delete").inc()
        return S.WriteResponse(index=srv.name, deleted=w.result, count=len(srv.index), persisted=srv.store.durable,
                               seq=w.seq)

    return await anyio.to_thread.run_sync(go)  # not in the search pool: a commit waits for an fsync
