"""A bounded schemathesis run over the OpenAPI schema: generated requests never get a 5xx, and every answer's
status, content type and body are the ones the schema documents.

Every request carries the admin key (which also reads), so generated input gets past authentication and
reaches validation; writes go to this test's own model dir. Bounded: 12 derandomized examples per operation.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance, \
    status_code_conformance

from _service_fixtures import ADMIN_KEY, AH, READ_KEY, make_model_dir, register_fake_encoders, \
    unregister_fake_encoders
from annrec.service import create_app, load_settings


@pytest.fixture(scope="module")
def api_app(tmp_path_factory):
    register_fake_encoders()
    d = make_model_dir(tmp_path_factory.mktemp("schemathesis") / "models")
    app = create_app(load_settings(model_dir=d, read_key=READ_KEY, admin_key=ADMIN_KEY, max_body_bytes=256 * 1024,
                                   persist="async", allowed_hosts=["localhost", "testserver"]))  # schemathesis' host
    with TestClient(app):  # runs the lifespan start-up (artifacts loaded)
        yield app
    unregister_fake_encoders()


def test_no_server_errors(api_app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app)
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 14
    failures: list[str] = []
    for op in ops:
        label = op.label

        @given(case=op.as_strategy())
        @settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            # the admin key also reads, so every generated request gets past authentication
            try:
                case.call_and_validate(headers=AH, checks=[not_a_server_error, status_code_conformance,
                                                          response_schema_conformance, content_type_conformance])
            except AssertionError as e:  # schemathesis failure groups are AssertionErrors
                failures.append(f"{label}: {str(e)[:500]}")  # noqa: B023 - run() is called in this iteration
            except Exception as e:  # noqa: BLE001
                failures.append(f"{label}: {type(e).__name__}: {str(e)[:500]}")  # noqa: B023

        run()
    assert not failures, "\n".join(failures[:10])
