"""Request and response models of the HTTP API (pydantic v2): FastAPI parses the bodies into them and
documents them (with these examples) in the OpenAPI schema.

The vocabulary: every answer that lists items calls them ``hits``; a hit is ``{"id", "score", "metadata"}``;
item metadata is ``metadata`` on read and on write; lists of item ids are ``*_ids``.

Limits that depend on the settings (``max_k``, ``max_batch``, ``max_ids``, ``max_string_length``) are
checked by the endpoints, so the message names the setting; the bounds here are hard caps that keep
validation itself cheap. Vector components must be finite (NaN, Infinity and overflowing numbers such
as ``1e999`` are refused with a 422).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictStr, model_validator

# Item ids: non-negative 64-bit integers or non-empty strings (the id type of the index must match).
IntId = Annotated[int, Field(ge=0, le=2**63 - 1)]
StrId = Annotated[StrictStr, Field(min_length=1, max_length=512)]
ItemId = IntId | StrId
Vector = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Field(min_length=1, max_length=65_536)]

_HARD_MAX_LIST = 1_000_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Renaming(_Model):
    """A request model that still accepts, for one release, the old spelling of renamed fields.

    ``RENAMED`` maps an old field name onto the new one; :attr:`deprecated_fields` lists the old names a
    request used (the route answers them with a ``Deprecation`` header).
    """

    RENAMED: ClassVar[dict[str, str]] = {}
    _deprecated: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _old_spellings(cls, data: Any, handler):
        used = []
        if isinstance(data, dict):
            for old, new in cls.RENAMED.items():
                if old in data and new not in data:
                    data = {**data, new: data[old]}
                    del data[old]
                    used.append(old)
        model = handler(data)
        model._deprecated = used
        return model

    @property
    def deprecated_fields(self) -> list[str]:
        """``"old -> new"`` for each old spelling this request used."""
        return [f"{old} -> {self.RENAMED[old]}" for old in self._deprecated]


# ----------------------------------------------------------------------------- errors and status
class ErrorBody(_Model):
    """Every 4xx/5xx answer: a machine-readable code and a message saying what was wrong and how to fix it."""

    error: str = Field(description="short code: invalid_request, unauthorized, forbidden, not_found, "
                                   "payload_too_large, conflict, internal_error, …")
    message: str
    details: list[dict[str, Any]] | None = Field(None, description="per-field problems of an invalid request")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": "invalid_request", "message": "queries have dimension 3 but the index expects 784: encode them "
                                                "with the same model the index was built from"}]})


class Health(_Model):
    status: str = "ok"


class Ready(_Model):
    status: str = Field(description="ready | loading")
    indexes: int
    generation: int
    worker: int = Field(description="process id of the worker that answered (several with --workers N)")


# ----------------------------------------------------------------------------- index descriptions
class IndexSummary(BaseModel):
    """What ``GET /v1/indexes`` lists for each index."""

    name: str
    backend: str = Field(description="faiss | hnswlib")
    metric: str = Field(description="ip (maximum inner product search) | cosine | l2 (squared distances)")
    dim: int
    count: int = Field(description="live items")
    trainer: str | None = Field(None, description="trainer of the embeddings the index was built from")
    user_recommendations: bool = Field(description="answers GET /v1/users/{user_id}/recommendations")
    query_encoder: str | None = Field(None, description="text | sequence: answers /v1/search/text or "
                                                        "/v1/recommendations/next")
    writable: bool
    query_params: list[str] = Field(description="per-request search parameters it understands (ef, nprobe, "
                                     "k_factor)")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "mf-hnsw", "backend": "hnswlib", "metric": "ip", "dim": 65, "count": 9724, "trainer": "mf",
         "user_recommendations": True, "query_encoder": None, "writable": True, "query_params": ["ef"]}]})


class IndexList(BaseModel):
    indexes: list[IndexSummary]
    generation: int = Field(description="increases with every reload")


class StorageState(BaseModel):
    applied_seq: int = Field(description="the last write-ahead-log entry applied to the served index")
    snapshot_seq: int = Field(description="the last log entry the current snapshot on disk holds")
    logged_since_snapshot: int = Field(description="logged items a restart would replay from the log")
    snapshots_written: int = Field(description="snapshots this process has written since it loaded the index")
    snapshot_error: str | None = Field(None, description="why the last snapshot failed (the log keeps every write)")
    durable: bool = Field(description="commits are fsynced (persist=sync)")


class IndexDetail(IndexSummary):
    """The manifest of one index plus what the server knows about it."""

    params: dict[str, Any] = Field(description="build parameters (M, ef_construction, factory, nlist, …)")
    source: dict[str, Any] = Field(description="the embeddings it was built from")
    path: str | None = Field(description="the index folder on the server (admin key only; null for the read key)")
    embeddings: str | None = Field(description="the embeddings folder on the server (admin key only)")
    n_users: int
    id_type: str | None = Field(None, description="int | str")
    memory_bytes: int | None
    storage: StorageState | None = Field(None, description="the write-ahead log and snapshots of a writable index")
    recommender_error: str | None = None
    query_encoder_error: str | None = None
    loaded_at: str


# ----------------------------------------------------------------------------- search
class Hit(BaseModel):
    """One ranked item."""

    id: int | str
    score: float = Field(description="similarity (ip, cosine; higher is better) or squared L2 distance "
                                     "(l2; lower is better)")
    metadata: dict[str, Any] | None = Field(None, description="item metadata (e.g. title, genres); null when "
                                                              "the item has none or include_metadata is false")


_HIT_EXAMPLES = [{"id": 318, "score": 4.21, "metadata": {"title": "Shawshank Redemption, The (1994)"}},
                 {"id": 858, "score": 4.02, "metadata": {"title": "Godfather, The (1972)"}}]


FILTER_DESCRIPTION = (
    "a payload filter on item metadata (Qdrant style): {\"must\": [...], \"should\": [...], \"must_not\": [...]} "
    "of conditions {\"key\": k, \"match\": {\"value\": v} | {\"any\": [...]}}, {\"key\": k, \"range\": "
    "{\"gte\": a, \"lt\": b}} or {\"key\": k, \"is_null\": true}; fewer than k hits when fewer items match")


class SearchRequest(_Model):
    """Nearest neighbours of one query vector (``vector``) or a batch (``vectors``)."""

    vector: Vector | None = Field(None, description="one query vector of the index's dimension")
    vectors: Annotated[list[Vector], Field(min_length=1, max_length=100_000)] | None = Field(
        None, description="a batch of query vectors (at most max_batch)")
    k: int = Field(10, ge=1, description="results per query (at most max_k and the index size)")
    ef: int | None = Field(None, ge=1, description="HNSW efSearch for this request (hnswlib, FAISS HNSW)")
    nprobe: int | None = Field(None, ge=1, description="IVF lists probed for this request (FAISS IVF)")
    k_factor: int | None = Field(None, ge=1, le=1024, description="re-ranked candidates per result for this "
                                 "request (FAISS re-ranking indexes such as IVF...,PQ...x4fs,RFlat: k_factor*k "
                                 "candidates re-scored exactly)")
    allowed_ids: Annotated[list[ItemId], Field(max_length=_HARD_MAX_LIST)] | None = Field(
        None, description="only these items may be returned (unknown ids are ignored)")
    denied_ids: Annotated[list[ItemId], Field(max_length=_HARD_MAX_LIST)] | None = Field(
        None, description="these items are never returned")
    include_metadata: StrictBool = Field(True, description="add each item's metadata to the hits")
    filter: dict[str, Any] | None = Field(None, description=FILTER_DESCRIPTION)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"vector": [0.12, -0.4, 0.33], "k": 5, "ef": 64},
        {"vectors": [[0.12, -0.4, 0.33], [0.5, 0.1, -0.2]], "k": 3, "denied_ids": [1, 2]}]})

    @model_validator(mode="after")
    def _one_of(self) -> SearchRequest:
        if (self.vector is None) == (self.vectors is None):
            raise ValueError("give exactly one of 'vector' (one query) or 'vectors' (a batch)")
        return self


class Hits(BaseModel):
    """The hits of one query, best first (fewer than k when filters leave fewer items)."""

    hits: list[Hit]


class RecommendationResponse(BaseModel):
    index: str
    k: int
    hits: list[Hit] = Field(description="best first (fewer than k when filters leave fewer items)")

    model_config = ConfigDict(json_schema_extra={"examples": [{"index": "mf-hnsw", "k": 2, "hits": _HIT_EXAMPLES}]})


class SearchResponse(RecommendationResponse):
    """The answer to a search with one ``vector``."""


class BatchSearchResponse(BaseModel):
    """The answer to a search with ``vectors``: one entry per query vector, in order."""

    index: str
    k: int
    results: list[Hits]

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"index": "mf-hnsw", "k": 2, "results": [{"hits": _HIT_EXAMPLES}, {"hits": _HIT_EXAMPLES[::-1]}]}]})


class SimilarResponse(RecommendationResponse):
    item_id: int | str


class UserRecommendationResponse(RecommendationResponse):
    user_id: int | str
    exclude_seen: bool


class NextRequest(_Renaming):
    """Next-item recommendation from a sequence of item ids (oldest first). ``items`` is the deprecated
    spelling of ``item_ids`` (accepted, answered with a ``Deprecation`` header)."""

    RENAMED: ClassVar[dict[str, str]] = {"items": "item_ids"}

    item_ids: Annotated[list[ItemId], Field(min_length=1, max_length=_HARD_MAX_LIST)] = Field(
        description="the item ids of the session, oldest first")
    timestamps: Annotated[list[Annotated[int, Field(ge=0, le=2**53)]], Field(max_length=_HARD_MAX_LIST)] | None = \
        Field(None, description="one Unix time (integer seconds) per item, non-decreasing, when the model uses them")
    k: int = Field(10, ge=1)
    index: StrId | None = Field(None, description="which sequence model (default: the first loaded)")
    exclude_input: StrictBool = Field(True, description="never recommend the items of the sequence itself")
    include_metadata: StrictBool = True
    filter: dict[str, Any] | None = Field(None, description=FILTER_DESCRIPTION)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"item_ids": [1, 260, 1196], "timestamps": [964982703, 964982931, 964983000], "k": 5}]})

    @model_validator(mode="after")
    def _one_time_per_item(self) -> NextRequest:
        if self.timestamps is not None and len(self.timestamps) != len(self.item_ids):
            raise ValueError(f"{len(self.timestamps)} timestamps for {len(self.item_ids)} items: give one "
                             f"timestamp per item or none")
        return self


class TextSearchRequest(_Model):
    """Items nearest to a text query, encoded by the text model the index was built from."""

    query: Annotated[StrictStr, Field(min_length=1, max_length=100_000)] = Field(description="the query text")
    k: int = Field(10, ge=1)
    index: StrId | None = Field(None, description="which text model (default: the first loaded)")
    allowed_ids: Annotated[list[ItemId], Field(max_length=_HARD_MAX_LIST)] | None = None
    denied_ids: Annotated[list[ItemId], Field(max_length=_HARD_MAX_LIST)] | None = None
    ef: int | None = Field(None, ge=1)
    nprobe: int | None = Field(None, ge=1)
    include_metadata: StrictBool = True
    filter: dict[str, Any] | None = Field(None, description=FILTER_DESCRIPTION)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "space opera with robots", "k": 5}]})


class TextSearchResponse(RecommendationResponse):
    query: str
    warnings: list[str] = Field(default_factory=list, exclude_if=lambda v: not v,
                                description="what the encoder ignored or assumed (absent when nothing)")


class NextResponse(RecommendationResponse):
    warnings: list[str] = Field(default_factory=list, exclude_if=lambda v: not v,
                                description="what the encoder ignored or assumed (unknown item ids, missing "
                                            "timestamps; absent when nothing)")


# ----------------------------------------------------------------------------- writes
class UpsertItem(_Model):
    id: ItemId
    vector: Vector
    metadata: dict[str, Any] | None = Field(None, description="stored with the item and returned in hits")


class UpsertRequest(_Model):
    """Insert or replace items (a known id is replaced)."""

    items: Annotated[list[UpsertItem], Field(min_length=1, max_length=100_000)]

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"items": [{"id": 200001, "vector": [0.1, 0.2, 0.3], "metadata": {"title": "A new movie (2025)"}}]}]})


class WriteResponse(BaseModel):
    index: str
    count: int = Field(description="live items after the write")
    persisted: bool = Field(description="the write is committed to the index's write-ahead log and fsynced "
                                        "(persist=sync): it survives a crash or a power loss; false with "
                                        "persist=async (committed, survives a crash of the server, not of the machine)")
    seq: int | None = Field(None, description="the write's sequence number in the write-ahead log")
    upserted: int | None = None
    deleted: int | str | None = None


class ItemResponse(BaseModel):
    index: str
    id: int | str
    metadata: dict[str, Any] | None = Field(None, description="the item's metadata (upserted, else the "
                                                              "embeddings')")
    vector: list[float] | None = Field(None, description="the stored vector (include_vector=true)")


class ReloadResponse(BaseModel):
    generation: int
    indexes: list[str]
    seconds: float
    skipped: list[str] = Field(default_factory=list, description="folders with a manifest that are not served")
