"""Test-wide settings (keep this file small; area fixtures live in tests/_<area>_fixtures.py)."""

import os

# OpenMP threads that spin while waiting make FAISS training 10x slower when the cores are shared
# (pytest, a uvicorn server and BLAS threads at once): let idle threads sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Never reach for a model hub during tests: the text model comes from an installed package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _local_test_client() -> None:
    """In-process clients call the app as ``http://localhost``: the service answers only the host names it
    serves (``allowed_hosts``), and Starlette's default test host ``testserver`` is not one of them."""
    import fastapi.testclient
    import starlette.testclient

    base = starlette.testclient.TestClient

    class LocalTestClient(base):
        def __init__(self, app, base_url: str = "http://localhost", *args, **kwargs):
            super().__init__(app, base_url, *args, **kwargs)

    fastapi.testclient.TestClient = LocalTestClient
    starlette.testclient.TestClient = LocalTestClient


_local_test_client()
