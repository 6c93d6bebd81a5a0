"""Writes (admin key): upsert items, delete an item; each saved to the index folder (``persist``)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter

from annrec._validate import as_matrix, normalize_ids
from annrec.errors import InputError
from annrec.service import schemas as S
from annrec.service.deps import ADMIN, IndexName, ItemIdPath, JsonRoute, Metrics, Reg, Settings
from annrec.service.errors import BODY_ERRORS, READ_ERRORS, WRITE_ERRORS
from annrec.service.limits import check_limits

router = APIRouter(prefix="/v1/indexes", tags=["writes"], dependencies=ADMIN, route_class=JsonRoute)


@router.put("/{name}/items", response_model=S.WriteResponse, response_model_exclude_none=True,
            responses={**BODY_ERRORS, **WRITE_ERRORS},
            summary="Insert or replace items (vectors, ids, metadata); saved to the index folder")
async def upsert(name: IndexName, body: S.UpsertRequest, reg: Reg, settings: Settings,
                 metrics: Metrics) -> S.WriteResponse:
    check_limits(settings, batch=len(body.items), ids={"items": [it.id for it in body.items]})
    dim = reg.get(name).index.dim
    for i, it in enumerate(body.items):
        if len(it.vector) != dim:
            raise InputError(f"item {i} (id {it.id!r}) has a vector of dimension {len(it.vector)} but index "
                             f"{name!r} expects {dim}")
    vectors = as_matrix([it.vector for it in body.items], dim=dim, name="item vectors")
    ids = normalize_ids([it.id for it in body.items], "item ids")
    meta = {it.id: it.metadata for it in body.items if it.metadata is not None} or None

    def go() -> S.WriteResponse:
        srv, version, _ = reg.write(name, lambda s: s.index.add(vectors, ids, items=meta))
        metrics.writes.labels(srv.name, "upsert").inc(len(ids))
        saved = reg.wait_saved(srv, version)
        return S.WriteResponse(index=srv.name, upserted=len(ids), count=len(srv.index), persisted=saved)

    return await anyio.to_thread.run_sync(go)  # not in the search pool: a sync save may take seconds


@router.delete("/{name}/items/{item_id}", response_model=S.WriteResponse, response_model_exclude_none=True,
               responses={**READ_ERRORS, **WRITE_ERRORS}, summary="Delete an item; saved to the index folder")
async def delete_item(name: IndexName, item_id: ItemIdPath, reg: Reg,
                      metrics: Metrics) -> S.WriteResponse:
    reg.get(name)

    def remove(srv):
        iid = srv.index.coerce_id(item_id)
        srv.index.remove([iid])
        return iid

    def go() -> S.WriteResponse:
        srv, version, iid = reg.write(name, remove)
        metrics.writes.labels(srv.name, "delete").inc()
        saved = reg.wait_saved(srv, version)
        return S.WriteResponse(index=srv.name, deleted=iid, count=len(srv.index), persisted=saved)

    return await anyio.to_thread.run_sync(go)  # not in the search pool: a sync save may take seconds
