"""``/docs`` and ``/redoc`` work offline: their scripts come from the installed package, checked in a real
headless Chromium against a real ``annrec serve`` (skipped where no Chromium is installed)."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest

from _service_fixtures import ServerProcess, make_model_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = make_model_dir(tmp_path_factory.mktemp("models"), with_text=False, with_sequence=False)
    with ServerProcess(root, "--insecure-no-auth", keys=False) as srv:
        yield srv


def test_docs_pages_reference_only_local_assets(server):
    for page in ("/docs", "/redoc"):
        html = httpx.get(server.url + page, timeout=10).text
        assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html and "fastapi.tiangolo.com" not in html
        for src in [s.split('"')[1] for s in html.split("src=")[1:] if s.startswith('"')]:
            r = httpx.get(server.url + src if src.startswith("/") else src, timeout=10)
            assert r.status_code == 200 and len(r.content) > 10_000, src


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium installed (apt-get install chromium)")
def test_swagger_ui_renders_the_endpoints_in_a_browser(server):
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                          "--dump-dom", server.url + "/docs"], capture_output=True, text=True, timeout=120).stdout
    # Swagger UI builds one "opblock" per operation from /openapi.json; an empty page has none
    assert dom.count("opblock-summary-path") >= 8, dom[:2000]
    assert "/v1/indexes/{name}/search" in dom or "/v1/indexes/{name}/search".replace("/", "\u200b/") in dom
