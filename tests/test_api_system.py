"""The statistics and system endpoints of the REST API (``/api/v1/statistics…``, ``/health``,
``/ready``, ``/settings``, ``/users``, ``/audit``) against a real served archive with
authentication on, on SQLite and PostgreSQL: studies stored by DCMTK's storescu and over
STOW-RS, bearer tokens of each role."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from system_site import SENDER, Site, seed, served
from vesalius.commands import operator
from vesalius.index.schema import instances
from vesalius.services.statistics import slope
from vesalius.settings import load_settings
from vesalius.wiring import effective_settings

PASSWORD = "correct horse battery"
ROLES = ("admin", "auditor", "radiologist", "technologist")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp(f"system-{request.param}")
    with served(folder, request.param, **{"auth.required": "true"}) as found:
        accounts = found.archive.accounts
        tokens = {}
        for role in ROLES:
            accounts.add_user(role, PASSWORD, frozenset({role}), operator())
            tokens[role] = accounts.create_token(role, operator())[1]
        found.__dict__["tokens"] = tokens
        seed(found, folder / "files", auth(found, "technologist"))
        yield found


def auth(site: Site, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {site.__dict__['tokens'][role]}"}


def call(site: Site, method: str, path: str, role: str = "admin", **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, f"{site.url}/api/v1{path}", headers=auth(site, role), timeout=30, **kwargs
    )


def test_statistics_count_what_is_stored_and_who_sent_it(site: Site) -> None:
    with site.running.catalog.read() as conn:
        stored = conn.execute(select(instances.c.source_ae, instances.c.size)).all()
    assert sorted({ae for ae, _ in stored}) == [SENDER, "technologist"]
    answer = call(site, "GET", "/statistics", "radiologist")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert (found["patients"], found["studies"], found["series"], found["instances"]) == (
        3,
        3,
        3,
        6,
    )
    assert found["bytes"] == sum(size for _, size in stored)
    disk = found["disk"]
    assert disk["total"] >= disk["used"] > 0 and disk["free"] > 0
    mix = {m["modality"]: (m["studies"], m["instances"]) for m in found["modalities"]}
    assert mix == {"CT": (1, 3), "MR": (1, 2), "CR": (1, 1)}
    assert [m["modality"] for m in found["modalities"]] == ["CT", "MR", "CR"]
    senders = {s["ae_title"]: (s["instances"], s["bytes"]) for s in found["senders"]}
    assert senders[SENDER][0] == 5 and senders["technologist"][0] == 1
    assert sum(b for _, b in senders.values()) == found["bytes"]
    assert call(site, "GET", "/statistics", "auditor").status_code == 403


def test_ingest_per_hour_and_day(site: Site) -> None:
    hourly = call(site, "GET", "/statistics/ingest?bucket=hour&days=2").json()
    assert hourly["bucket"] == "hour"
    assert 48 <= len(hourly["points"]) <= 49
    assert sum(p["instances"] for p in hourly["points"]) == 6
    now = datetime.now(UTC)
    last = datetime.fromisoformat(hourly["points"][-1]["time"])
    assert last <= now and (now - last).total_seconds() < 3600
    daily = call(site, "GET", "/statistics/ingest?bucket=day&days=7").json()
    assert len(daily["points"]) == 7
    assert (
        sum(p["bytes"] for p in daily["points"]) == call(site, "GET", "/statistics").json()["bytes"]
    )
    for bad in ("bucket=week", "days=0", "days=400", "days=x"):
        answer = call(site, "GET", f"/statistics/ingest?{bad}")
        assert answer.status_code == 422, bad
        assert answer.headers["content-type"] == "application/problem+json"


def test_the_forecast_says_when_the_disk_fills_and_from_what(site: Site) -> None:
    found = call(site, "GET", "/statistics/forecast").json()
    assert found["days"] >= 1 and found["instances"] == 6
    assert found["bytes_per_day"] > 0
    assert found["free"] > 0
    assert found["days_until_full"] == pytest.approx(found["free"] / found["bytes_per_day"])
    assert date.fromisoformat(found["since"]) <= datetime.now(UTC).date()
    if found["full_on"] is not None:
        assert date.fromisoformat(found["full_on"]) > datetime.now(UTC).date()


def test_least_squares_slope() -> None:
    assert slope([]) == 0 and slope([5.0]) == 0
    assert slope([0, 10, 20, 30]) == pytest.approx(10)
    assert slope([0, 0, 30, 30]) == pytest.approx(12)  # 60 / 5
    assert slope([3, 3, 3]) == 0


def test_health_and_readiness(site: Site) -> None:
    health = call(site, "GET", "/health", "auditor").json()
    assert health["status"] == "ok" and health["index"] == "ok"
    ready = call(site, "GET", "/ready", "auditor")
    assert ready.status_code in (200, 503)
    assert set(ready.json()["checks"]) == {"database", "storage", "disk", "jobs"}
    assert ready.json()["checks"]["database"]["ok"] is True


def test_settings_for_administrators_with_secrets_hidden(site: Site) -> None:
    found = call(site, "GET", "/settings").json()
    assert found["auth.required"] == {"value": "true", "source": "set on the command line"}
    assert found["dicom.ae_title"]["source"] == "the default"
    assert call(site, "GET", "/settings", "radiologist").status_code == 403
    shown = effective_settings(
        load_settings(
            environ={},
            overrides={
                "database_url": "postgresql+psycopg://vesalius:hunter2@db.example/pacs",
                "auth.oidc_client_secret": "s3cr3t",
                "audit.syslog_url": "tls://audit:pa55word@collector.example:6514",
                "http.public_url": "https://proxy:opensesame@pacs.example.org",
            },
        )
    )
    text = repr(shown)
    for secret in ("hunter2", "s3cr3t", "pa55word", "opensesame"):
        assert secret not in text
    assert shown["audit.syslog_url"]["value"] == "tls://audit:***@collector.example:6514"
    assert shown["auth.oidc_client_secret"]["value"] == "***"


def test_users_are_added_changed_and_disabled_by_administrators(site: Site) -> None:
    name = f"reader-{site.backend}"
    added = call(
        site,
        "POST",
        "/users",
        json={"name": name, "password": PASSWORD, "roles": ["radiologist"], "groups": ["cardio"]},
    )
    assert added.status_code == 201, added.text
    assert PASSWORD not in added.text
    assert added.json()["roles"] == ["radiologist"] and added.json()["groups"] == ["cardio"]
    assert (
        call(site, "POST", "/users", json={"name": name, "password": PASSWORD}).status_code == 400
    )
    listed = call(site, "GET", "/users?limit=2").json()
    assert listed["total"] == len(ROLES) + 1 and len(listed["items"]) == 2
    rest = call(site, "GET", f"/users?limit=10&cursor={listed['next']}").json()
    names = [u["name"] for u in listed["items"] + rest["items"]]
    assert names == sorted([*ROLES, name]) and rest["next"] is None
    assert PASSWORD not in repr(listed) + repr(rest)

    changed = call(site, "PATCH", f"/users/{name}", json={"roles": ["auditor", "radiologist"]})
    assert changed.json()["roles"] == ["auditor", "radiologist"]
    assert changed.json()["groups"] == ["cardio"]
    new_password = "a new long passphrase"
    assert call(site, "PATCH", f"/users/{name}", json={"password": new_password}).status_code == 200
    accounts = site.archive.accounts
    assert accounts.verify(name, new_password, "127.0.0.1").name == name
    assert call(site, "PATCH", f"/users/{name}", json={"roles": ["pope"]}).status_code == 400
    assert call(site, "PATCH", "/users/nobody", json={"disabled": True}).status_code == 404

    assert call(site, "DELETE", f"/users/{name}").status_code == 204
    assert call(site, "GET", f"/users/{name}").json()["disabled"] is True
    for method, path in (("GET", "/users"), ("DELETE", f"/users/{name}")):
        assert call(site, method, path, "technologist").status_code == 403


def test_who_accessed_this_patient_with_the_reading_itself_audited(site: Site) -> None:
    patient = "SYS-1"
    study = next(s for s, p in site.studies.items() if p == patient)
    assert call(site, "GET", f"/audit?patient={patient}", "radiologist").status_code == 403
    first = call(site, "GET", f"/audit?patient={patient}&limit=1", "auditor")
    assert first.status_code == 200, first.text
    page = first.json()
    assert len(page["items"]) == 1 and page["total"] >= 1
    records = page["items"]
    cursor = page["next"]
    while cursor:
        page = call(
            site, "GET", f"/audit?patient={patient}&limit=1&cursor={cursor}", "auditor"
        ).json()
        records += page["items"]
        cursor = page["next"]
    assert len({r["id"] for r in records}) == len(records)
    assert [r["id"] for r in records] == sorted((r["id"] for r in records), reverse=True)
    stored = [r for r in records if r["kind"] == "instances-stored"]
    assert stored and stored[0]["who"] == SENDER and patient in stored[0]["patients"]
    by_study = call(site, "GET", f"/audit?study={study}", "auditor").json()["items"]
    assert {r["id"] for r in stored} <= {r["id"] for r in by_study}
    reads = call(site, "GET", "/audit?user=auditor", "auditor").json()["items"]
    assert any(r["kind"] == "audit-read" and patient in r["patients"] for r in reads)
    assert call(site, "GET", "/audit?since=2999-01-01", "auditor").json()["items"] == []
    assert call(site, "GET", "/audit?since=yesterday", "auditor").status_code == 400
    assert call(site, "GET", "/audit?cursor=%%%", "auditor").status_code == 400
