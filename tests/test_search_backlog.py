"""The study list's free text with its terms written off the ingest commit (issue 15 follow-up):
ingest notes a new study in the search backlog, a search finds the backlog's studies by their
values, the indexer writes their terms and empties the backlog, a deletion takes a study off
it, two indexers on PostgreSQL skip each other's rows, and the downgrade to 0016 writes what
is left. On SQLite and PostgreSQL, through the real archive (ingest, browse, delete)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Table, func, select
from tests.conftest import RunningServer, make_server, wait_until
from tests.synth import make_instance

from vesalius.identity import Identity
from vesalius.index.browse import StudyFilters
from vesalius.index.database import alembic_config, open_engine
from vesalius.index.lookup import RetrieveKeys
from vesalius.index.schema import search_backlog, search_terms, studies
from vesalius.index.search import index_backlog

WHO = Identity.system("test")


@pytest.fixture
def site(server: RunningServer) -> RunningServer:
    """``conftest.server``: an archive per test, on each backend."""
    return server


def _store(site: RunningServer, tmp_path: Path, n: int, **attrs: str) -> str:
    path = tmp_path / f"in-{n}.dcm"
    ds = make_instance(path, **attrs)
    site.archive.ingest.ingest_copy(path, WHO)
    return str(ds.StudyInstanceUID)


def _found(site: RunningServer, text: str) -> set[str]:
    assert site.archive.browse is not None
    listed = site.archive.browse.studies(StudyFilters(matching={}, text=text), WHO, limit=100)
    assert listed.total == len(listed.rows)
    return {row.study_uid for row in listed.rows}


def _count(site: RunningServer, table: Table) -> int:
    with site.catalog.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_backlog_studies_are_found_then_indexed(site: RunningServer, tmp_path: Path) -> None:
    # The archive's indexer is stopped: the backlog stays as ingest leaves it.
    assert site.assembly.indexer is not None
    site.assembly.indexer.close()
    doe = _store(site, tmp_path, 1, PatientName="Müller^Hans", StudyDescription="CT Thorax")
    roe = _store(site, tmp_path, 2, PatientName="Roe^Jane", PatientID="P-2", AccessionNumber="X9")
    assert _count(site, search_backlog) == 2
    assert _count(site, search_terms) == 0  # nothing written in the ingest transaction

    # Found by their values, with the terms' rules: prefixes of words, accents folded.
    assert _found(site, "mul") == {doe}
    assert _found(site, "müller thor") == {doe}
    assert _found(site, "jan roe") == {roe}
    assert _found(site, "p-2") == {roe}
    assert _found(site, "x9 doe") == set()
    assert _found(site, "ller") == set()

    with site.catalog.write() as conn:
        assert index_backlog(conn, limit=1) == 1
    assert _count(site, search_backlog) == 1  # one written, one still matched by value
    assert _found(site, "mul") == {doe}
    assert _found(site, "jan") == {roe}
    with site.catalog.write() as conn:
        assert index_backlog(conn, limit=None) == 1
    assert _count(site, search_backlog) == 0
    assert _found(site, "mul") == {doe}
    assert _found(site, "hans thorax") == {doe}
    assert _found(site, "jan") == {roe}

    # A study deleted while in the backlog leaves no row behind.
    gone = _store(site, tmp_path, 3, PatientName="Gone^Soon", PatientID="P-3")
    assert _found(site, "gone") == {gone}
    site.archive.deletion.delete(RetrieveKeys("STUDY", study_uids=(gone,)), WHO)
    assert _count(site, search_backlog) == 0
    assert _found(site, "gone") == set()


def test_the_indexer_writes_the_terms_after_a_store(site: RunningServer, tmp_path: Path) -> None:
    uid = _store(site, tmp_path, 1, PatientName="Indexed^Soon", PatientID="P-4")
    wait_until(lambda: _count(site, search_backlog) == 0, what="the search indexer")
    with site.catalog.read() as conn:
        pk = conn.execute(select(studies.c.pk).where(studies.c.study_uid == uid)).scalar_one()
        terms = set(
            conn.execute(select(search_terms.c.term).where(search_terms.c.study_pk == pk)).scalars()
        )
    assert {"INDEXED", "SOON"} <= terms
    assert _found(site, "indexed") == {uid}


def test_two_indexers_skip_each_others_rows(site: RunningServer, tmp_path: Path) -> None:
    """PostgreSQL: a batch locks its backlog rows and another node's batch skips them (no
    study's terms written twice); SQLite has one writer at a time."""
    if site.catalog.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite's writers take turns")
    assert site.assembly.indexer is not None
    site.assembly.indexer.close()
    first = _store(site, tmp_path, 1, PatientName="First^One", PatientID="P-1")
    second = _store(site, tmp_path, 2, PatientName="Second^Two", PatientID="P-2")
    with site.catalog.engine.connect() as one, site.catalog.engine.connect() as other:
        assert index_backlog(one, limit=1) == 1  # holds the first study's row, not committed
        assert index_backlog(other, limit=None) == 1  # skips it, writes the second
        other.commit()
        one.commit()
    assert _count(site, search_backlog) == 0
    assert _found(site, "first") == {first}
    assert _found(site, "second two") == {second}


def test_downgrade_writes_the_backlog(tmp_path: Path, database_url: str) -> None:
    """Going back to 0016 (no backlog) writes the terms of the studies still in it."""
    running = make_server(tmp_path / "data", database_url)
    try:
        assert running.assembly.indexer is not None
        running.assembly.indexer.close()
        _store(running, tmp_path, 1, PatientName="Left^Behind", PatientID="P-1")
        assert _count(running, search_backlog) == 1
    finally:
        running.dimse.stop(grace=2)
        running.archive.close()
    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            command.downgrade(alembic_config(conn), "0016")
            conn.commit()
            terms = set(conn.execute(select(search_terms.c.term)).scalars())
            assert {"LEFT", "BEHIND", "P-1"} <= terms
            command.upgrade(alembic_config(conn), "head")
            conn.commit()
    finally:
        engine.dispose()
