"""The whole REST API against its own OpenAPI document (``/api/openapi.json``), with
Schemathesis (property-based tests generated from the document): a real served archive on
SQLite and PostgreSQL, with a few stored studies, fuzzed operation by operation. No generated
request may get a 5xx; every response must have a declared status, content type and a body
matching its schema.

Generated path parameters are random strings; so that operations on existing resources are
reached too, half of the cases get the UIDs, patient ID and user name of what the archive
holds instead (no stateful links needed). Both valid (positive) and invalid (negative)
requests are generated. Examples per operation are bounded (``VESALIUS_SCHEMA_EXAMPLES`` valid
ones, at most 10 by default, and half as many invalid ones; half of both on PostgreSQL, where
the SQL differs little), and so is their sum: ``VESALIUS_SCHEMA_BUDGET`` valid examples (300)
shared by the operations, each getting at least 2, so the run does not grow with the API.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from system_site import Site, seed, served
from vesalius.commands import operator

PASSWORD = "correct horse battery"
EXAMPLES = int(os.environ.get("VESALIUS_SCHEMA_EXAMPLES", "10"))
BUDGET = int(os.environ.get("VESALIUS_SCHEMA_BUDGET", "300"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """An archive with three stored studies; authentication off (anonymous administrator), so
    every operation is reachable."""
    folder = tmp_path_factory.mktemp(f"schema-{request.param}")
    with served(folder, request.param, **{"auth.required": "false"}) as found:
        seed(found, folder / "files")
        yield found


def known_values(site: Site) -> dict[str, str]:
    """Path parameter values naming what exists, by parameter name."""
    study = next(iter(site.studies))
    series = next(s for s, owner in site.series.items() if owner == study)
    instance = next(i for i, owner in site.instances.items() if owner == series)
    return {
        "study_uid": study,
        "series_uid": series,
        "sop_instance_uid": instance,
        "instance_uid": instance,
        "patient_id": site.studies[study],
        "name": "admin-user",
    }


def strategy(operation: Any, known: dict[str, str], mode: GenerationMode) -> Any:
    """Cases for ``operation``: generated, and (half of them) with the path parameters that
    name something existing."""
    generated = operation.as_strategy(generation_mode=mode)
    names = [p.name for p in operation.path_parameters]
    if not names or not any(name in known for name in names):
        return generated
    fixed = {name: known[name] for name in names if name in known}
    return st.one_of(generated, operation.as_strategy(generation_mode=mode, path_parameters=fixed))


def streams(operation: Any) -> bool:
    """Whether ``operation`` answers with an endless stream (server-sent events): its own
    tests cover it; a generated request would wait for its end."""
    responses = operation.definition.raw.get("responses", {})
    return any(
        "text/event-stream" in (answer.get("content") or {}) for answer in responses.values()
    )


def can_be_invalid(operation: Any) -> bool:
    """Whether a request to ``operation`` can break its schema (Hypothesis otherwise spends
    seconds proving that it cannot): a body, a query or header parameter, or a path
    parameter narrower than any text."""
    raw = operation.definition.raw
    if raw.get("requestBody"):
        return True
    for parameter in raw.get("parameters", []):
        schema = parameter.get("schema") or {}
        if parameter.get("in") != "path" or set(schema) - {"type", "title", "description"}:
            return True
        if schema.get("type") != "string":
            return True
    return False


def run(operation: Any, cases: Any, answers: list[int], examples: int) -> None:
    @given(case=cases)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def each(case: Any) -> None:
        answers.append(case.call_and_validate(checks=CHECKS, timeout=30).status_code)

    each()


def test_every_operation_answers_as_documented(site: Site) -> None:
    site.archive.accounts.add_user("admin-user", PASSWORD, frozenset({"admin"}), operator())
    schema = schemathesis.openapi.from_url(f"{site.url}/api/openapi.json")
    known = known_values(site)
    failures: list[str] = []
    answers: list[int] = []
    tried = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    # deletions last, so the seeded resources are there for every other operation
    operations = [
        operation
        for operation in sorted(operations, key=lambda op: op.method.upper() == "DELETE")
        if not streams(operation)
    ]
    per_operation = max(2, min(EXAMPLES, BUDGET // max(1, len(operations))))
    for operation in operations:
        tried += 1
        for mode, share in ((GenerationMode.POSITIVE, 1), (GenerationMode.NEGATIVE, 2)):
            if mode == GenerationMode.NEGATIVE and not can_be_invalid(operation):
                continue
            examples = max(1, per_operation // share // (2 if site.backend == "postgresql" else 1))
            try:
                run(operation, strategy(operation, known, mode), answers, examples)
            except Unsatisfiable:
                pass  # nothing to get wrong (negative cases of an operation without inputs)
            except Exception as exc:  # each operation's failure is reported, then all fail
                failures.append(f"{operation.label} ({mode}): {exc}")
    assert tried >= 10 and len(answers) >= tried * min(per_operation, 4) // 2
    assert {200, 404, 422} <= set(answers)  # existing resources were reached, and refusals
    assert not failures, "\n\n".join(failures)
