"""Schemathesis against the server's own OpenAPI schema: whatever a client sends, never a 500.

Every operation gets inputs generated from its schema (boundaries, wrong types, huge
numbers, odd strings); the server must answer each with a status it means (2xx, a
one-line 4xx), never "internal server error".
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from medfm.server.app import create_app
from medfm.server.security import CLIENT_HEADER
from medfm.server.settings import ServerSettings
from servertools import make_data


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fuzz")
    data = make_data(root)
    # no rate limit here: the fuzzer would spend its examples on 429s
    return create_app(ServerSettings(data_dir=root, catalog_url=data["url"], rate_per_second=1e9, rate_burst=10**9))


#: The server answers only loopback host names (DNS rebinding) and takes changes only from
#: clients that send its client header (cross-site requests); the fuzzer's requests carry both.
LOOPBACK = {"host": "127.0.0.1", CLIENT_HEADER: "fuzz"}


def test_no_input_makes_the_server_fail(app):
    # the PACS operations need a PACS; tests/test_server_pacs.py covers them against Orthanc
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=LOOPBACK).exclude(path_regex="^/api/pacs")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20
    for operation in operations:

        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def answers_without_failing(case: schemathesis.Case) -> None:
            response = case.call(headers=LOOPBACK)
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}"

        answers_without_failing()
