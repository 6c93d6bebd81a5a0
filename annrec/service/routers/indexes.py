"""Index reads: list and describe the indexes, one item, nearest items of vectors, similar items."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from annrec.recommend import Recommendation
from annrec.service import schemas as S
from annrec.service.deps import (READ, IndexName, ItemIdPath, JsonRoute, Key, Reg, Settings, in_worker, is_admin,
                                 reading)
from annrec.service.errors import BODY_ERRORS, ERR, READ_ERRORS
from annrec.service.limits import allowed_k, check_limits, check_response_size, query_params, to_queries
from annrec.service.batching import batchable
from annrec.service.registry import ServedIndex

router = APIRouter(prefix="/v1/indexes", dependencies=READ, route_class=JsonRoute)


def hit_list(hits: list[Recommendation], include_metadata: bool) -> list[S.Hit]:
    """Recommendations as response hits ``{"id", "score", "metadata"}``."""
    if include_metadata:
        return [S.Hit(id=h.item_id, score=h.score, metadata=h.metadata) for h in hits]
    return [S.Hit(id=h.item_id, score=h.score) for h in hits]


@router.get("", response_model=S.IndexList, tags=["indexes"], summary="The served indexes", responses={401: ERR})
async def list_indexes(reg: Reg) -> S.IndexList:
    snap = reg.snapshot
    return S.IndexList(indexes=[srv.describe(full=False) for _, srv in sorted(snap.indexes.items())],
                       generation=snap.generation)


@router.get("/{name}", response_model=S.IndexDetail, tags=["indexes"], responses=READ_ERRORS,
            summary="One index: backend, metric, dim, count, parameters")
async def get_index(request: Request, name: IndexName, reg: Reg, settings: Settings, key: Key) -> S.IndexDetail:
    d = await in_worker(request, reg.get(name).describe)
    if not is_admin(settings, key):  # server paths only to the admin key
        for field in ("recommender_error", "query_encoder_error"):
            for p in (d.get("path"), d.get("embeddings")):
                if d.get(field) and p:
                    d[field] = d[field].replace(p, "<server folder>")
        d["path"] = d["embeddings"] = None
        d["source"] = {k: v for k, v in (d.get("source") or {}).items() if k not in ("embeddings", "path")}
    return S.IndexDetail(**d)


@router.get("/{name}/items/{item_id}", response_model=S.ItemResponse, tags=["indexes"], responses=READ_ERRORS,
            summary="One item's metadata (and optionally its stored vector)")
async def get_item(request: Request, name: IndexName, item_id: ItemIdPath, reg: Reg,
                   include_vector: bool = False) -> S.ItemResponse:
    srv = reg.get(name)

    def get() -> S.ItemResponse:
        iid = srv.index.coerce_id(item_id)
        vec = srv.index.get_vector(iid)  # raises UnknownIdError
        return S.ItemResponse(index=srv.name, id=iid, metadata=srv.recommender.metadata(iid),
                              vector=vec.tolist() if include_vector else None)

    return await reading(request, srv, get)


def prepare_search(reg, name: str, body: S.SearchRequest, settings) -> tuple[ServedIndex, dict | None]:
    """The checks of a search before it runs: limits, the index, its parameters -> ``(index, params)``.

    Raises:
        InputError: a limit or a parameter. UnknownIndexError: no such index.
    """
    check_limits(settings, k=body.k, batch=1 if body.vector is not None else len(body.vectors), ef=body.ef,
                 nprobe=body.nprobe, ids={"allowed_ids": body.allowed_ids, "denied_ids": body.denied_ids})
    srv = reg.get(name)
    return srv, query_params(srv, body.ef, body.nprobe, body.k_factor)


def answer_search(srv: ServedIndex, body: S.SearchRequest, params: dict | None,
                  threads: int) -> S.SearchResponse | S.BatchSearchResponse:
    """Run a search (blocking: call it in a worker thread under ``srv``'s read lock) into its response model."""
    vectors = [body.vector] if body.vector is not None else body.vectors
    q = to_queries(vectors, srv.index.dim)
    k = allowed_k(srv, body.k, body.allowed_ids, body.denied_ids)
    rows = srv.recommender.search(q, k, allowed_ids=body.allowed_ids, denied_ids=body.denied_ids,
                                  filter=body.filter, params=params,
                                  threads=threads, include_metadata=body.include_metadata) if k else [[] for _ in q]
    check_response_size(srv.settings, rows, body.include_metadata)
    if body.vector is not None:
        return S.SearchResponse(index=srv.name, k=body.k, hits=hit_list(rows[0], body.include_metadata))
    return S.BatchSearchResponse(index=srv.name, k=body.k,
                                 results=[S.Hits(hits=hit_list(r, body.include_metadata)) for r in rows])


BINARY_BODY = {"requestBody": {"content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"},
    "description": "the query vectors as raw little-endian float32 (nq x the index's dim), the other fields in "
                   "the query string (?k=10&ef=64&include_metadata=false; filter as JSON text): one row answers "
                   "hits, several answer results"}}}}


@router.post("/{name}/search", response_model=S.SearchResponse | S.BatchSearchResponse, tags=["search"],
             responses=BODY_ERRORS, openapi_extra=BINARY_BODY,
             summary="Nearest items of one query vector (hits) or a batch (results); JSON or float32 body")
async def search(request: Request, name: IndexName, body: S.SearchRequest, reg: Reg,
                 settings: Settings) -> S.SearchResponse | S.BatchSearchResponse:
    srv, params = prepare_search(reg, name, body, settings)
    batcher = getattr(request.app.state, "batcher", None)
    if batcher is not None and batchable(body):
        from starlette.responses import Response

        from annrec.service.batching import submit_search
        from annrec.service.errors import JSON

        return Response(await submit_search(batcher, srv, body, params, settings.search_threads), media_type=JSON)
    return await reading(request, srv, answer_search, srv, body, params, settings.search_threads)


@router.get("/{name}/items/{item_id}/similar", response_model=S.SimilarResponse, tags=["search"],
            responses=READ_ERRORS, summary="Items most similar to an item (the item itself excluded)")
async def similar(request: Request, name: IndexName, item_id: ItemIdPath, reg: Reg, settings: Settings,
                  k: int = Query(10, ge=1), ef: int | None = Query(None, ge=1),
                  nprobe: int | None = Query(None, ge=1), include_metadata: bool = True,
                  filter: str | None = Query(None, max_length=16384, description="a payload filter as JSON text: "
                                             + S.FILTER_DESCRIPTION)) -> S.SimilarResponse:
    check_limits(settings, k=k, ef=ef, nprobe=nprobe)
    srv = reg.get(name)
    params = query_params(srv, ef, nprobe)

    def go() -> S.SimilarResponse:
        hits = srv.recommender.similar_items(item_id, k, filter=filter, params=params, threads=settings.search_threads,
                                             include_metadata=include_metadata)
        check_response_size(settings, [hits], include_metadata)
        return S.SimilarResponse(index=srv.name, k=k, item_id=srv.index.coerce_id(item_id),
                                 hits=hit_list(hits, include_metadata))

    return await reading(request, srv, go)
