"""The OpenAPI document as a client generator reads it: valid OpenAPI 3.0, every operation named.

(What the live server answers is checked against the same document by tests/integration/test_fuzz_api.py.)
"""

from __future__ import annotations

import re

import jsonschema
import schemathesis
from schemathesis.specs.openapi.definitions import OPENAPI_30

from wanhook.service.web.openapi import DOCUMENT

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def operations() -> list[tuple[str, str, dict]]:
    return [
        (path, method, operation)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_the_document_is_valid_openapi_3_0() -> None:
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft4Validator(OPENAPI_30).iter_errors(DOCUMENT)
    ]
    assert not errors, errors


def test_every_operation_has_a_unique_camel_case_operation_id() -> None:
    found = operations()
    assert len(found) >= 15
    missing = [f"{method.upper()} {path}" for path, method, operation in found if not operation.get("operationId")]
    assert not missing, f"no operationId: {missing}"
    ids = [operation["operationId"] for _, _, operation in found]
    # Generated clients turn these into method names: one spelling for all, and no two alike even once
    # a generator has changed their case.
    assert all(re.fullmatch(r"[a-z][a-zA-Z0-9]*", name) for name in ids), ids
    assert len({name.lower() for name in ids}) == len(ids), ids


def test_a_client_finds_each_operation_by_its_id() -> None:
    schema = schemathesis.openapi.from_dict(DOCUMENT)
    for path, method, operation in operations():
        found = schema.find_operation_by_id(operation["operationId"])
        assert (found.path, found.method.lower()) == (path, method)


def test_the_task_request_names_every_kind_and_its_fields() -> None:
    from wanhook.service.domain.models import KIND_NAMES, KINDS, MODELS, RESOLUTIONS

    request = DOCUMENT["components"]["schemas"]["TaskRequest"]
    fields = request["properties"]
    assert fields["kind"]["enum"] == [*KIND_NAMES, *KINDS]
    assert "text-to-video" in fields["kind"]["enum"]  # the contract's name of the default kind
    assert set(fields["model"]["enum"]) == set(MODELS)
    assert {"img_url", "first_frame_url", "last_frame_url", "audio"} <= set(fields)
    assert fields["resolution"]["enum"] == list(RESOLUTIONS)
    assert "prompt" not in request.get("required", [])  # optional for the image kinds
