"""The HTTP API (FastAPI) over annrec indexes and recommenders: ``annrec serve``.

* :func:`create_app` — the FastAPI app (endpoints, auth, limits, metrics); see ``docs/service.md``.
* :class:`ServiceSettings` / :func:`load_settings` — flags > ``ANNREC_*`` env vars > config file.
* :class:`Registry` — name -> served index (its embeddings, metadata, recommender side), atomic reloads.
* :func:`register_query_encoder` / :func:`query_encoder` — the hook through which text and sequence
  models offer a query encoder (``/v1/search/text``, ``/v1/recommendations/next``).
"""

from annrec.service.registry import Registry, discover, query_encoder, register_query_encoder
from annrec.service.settings import ServiceSettings, load_settings


def create_app(*args, **kwargs):
    """See :func:`annrec.service.app.create_app` (imported lazily: FastAPI is only needed to serve)."""
    from annrec.service.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["create_app", "Registry", "ServiceSettings", "load_settings", "discover", "query_encoder",
           "register_query_encoder"]
