"""Recommendations: a user's top-k items, the next items after a sequence, items for a text query.

Each picks the index named by ``index``, else ``default_index``, else the first (by name) that can
answer (:meth:`~annrec.service.registry.Registry.pick`), and asks its one
:class:`~annrec.recommend.Recommender`.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Query, Request, Response

from annrec.service import schemas as S
from annrec.service.deps import READ, JsonRoute, Reg, Settings, mark_deprecated, reading
from annrec.service.errors import BODY_ERRORS, READ_ERRORS
from annrec.service.limits import allowed_k, check_limits, check_response_size, query_params
from annrec.service.routers.indexes import hit_list

router = APIRouter(dependencies=READ, route_class=JsonRoute)


@router.get("/v1/users/{user_id}/recommendations", response_model=S.UserRecommendationResponse,
            tags=["recommendations"], responses=READ_ERRORS,
            summary="Top-k items for a user of a collaborative-filtering model (maximum inner product search)")
async def user_recommendations(request: Request, reg: Reg, settings: Settings,
                               user_id: str = Path(max_length=512), k: int = Query(10, ge=1),
                               exclude_seen: bool = True, index: str | None = Query(None, max_length=256),
                               ef: int | None = Query(None, ge=1), nprobe: int | None = Query(None, ge=1),
                               include_metadata: bool = True,
                               filter: str | None = Query(None, max_length=16384, description="a payload filter "
                                                          "as JSON text: " + S.FILTER_DESCRIPTION),
                               ) -> S.UserRecommendationResponse:
    check_limits(settings, k=k, ef=ef, nprobe=nprobe)
    srv = reg.pick("users", index)
    params = query_params(srv, ef, nprobe)

    def go() -> S.UserRecommendationResponse:
        hits = srv.recommender.recommend(user_id, k, exclude_seen=exclude_seen, filter=filter, params=params,
                                         threads=settings.search_threads, include_metadata=include_metadata)
        check_response_size(settings, [hits], include_metadata)
        emb = srv.embeddings
        uid = emb.query_ids[emb.query_row_of(user_id)]
        return S.UserRecommendationResponse(index=srv.name, k=k, user_id=uid.item() if hasattr(uid, "item") else uid,
                                            exclude_seen=exclude_seen, hits=hit_list(hits, include_metadata))

    return await reading(request, srv, go)


@router.post("/v1/recommendations/next", response_model=S.NextResponse, tags=["recommendations"],
             responses=BODY_ERRORS,
             summary="Next items after a sequence of item ids (sequence models; 404 when none is loaded)")
async def recommend_next(request: Request, body: S.NextRequest, reg: Reg, settings: Settings,
                         response: Response) -> S.NextResponse:
    check_limits(settings, k=body.k, ids={"item_ids": body.item_ids})
    mark_deprecated(response, body.deprecated_fields)
    srv = reg.pick("sequence", body.index)

    def go() -> S.NextResponse:
        hits, warnings = srv.recommender.recommend_next(
            body.item_ids, body.k, timestamps=body.timestamps, exclude_input=body.exclude_input, filter=body.filter,
            threads=settings.search_threads, include_metadata=body.include_metadata)
        return S.NextResponse(index=srv.name, k=body.k, warnings=warnings,
                              hits=hit_list(hits, body.include_metadata))

    return await reading(request, srv, go)


@router.post("/v1/search/text", response_model=S.TextSearchResponse, tags=["search"], responses=BODY_ERRORS,
             summary="Items nearest to a text query (text-encoder models; 404 when none is loaded)")
async def search_text(request: Request, body: S.TextSearchRequest, reg: Reg,
                      settings: Settings) -> S.TextSearchResponse:
    check_limits(settings, k=body.k, text=body.query, ef=body.ef, nprobe=body.nprobe,
                 ids={"allowed_ids": body.allowed_ids, "denied_ids": body.denied_ids})
    srv = reg.pick("text", body.index)
    params = query_params(srv, body.ef, body.nprobe)

    def go() -> S.TextSearchResponse:
        k = allowed_k(srv, body.k, body.allowed_ids, body.denied_ids)
        if not k:  # the allow-list leaves nothing
            return S.TextSearchResponse(index=srv.name, k=body.k, query=body.query, hits=[])
        hits, warnings = srv.recommender.search_text(
            body.query, k, allowed_ids=body.allowed_ids, denied_ids=body.denied_ids, filter=body.filter, params=params,
            threads=settings.search_threads, include_metadata=body.include_metadata)
        return S.TextSearchResponse(index=srv.name, k=body.k, query=body.query, warnings=warnings,
                                    hits=hit_list(hits, body.include_metadata))

    return await reading(request, srv, go)
