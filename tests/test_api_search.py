"""The study list's free text (issue 15, part "search"): the search terms of a study and the
words of a search; the migration that made the table writes the terms of the studies already
stored, on SQLite and PostgreSQL. The list's answers to ``q`` (words starting terms, several
words, beyond ASCII, with the other filters and the access labels, after ingest and deletion)
are tested on the served archive of ``test_api_resources``; after a correction and its undo,
in ``test_api_changes``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection

from vesalius.index.database import alembic_config, open_engine
from vesalius.index.schema import patients, search_terms, studies
from vesalius.index.search import index_all, query_words, terms_of


def test_terms_and_words() -> None:
    terms = terms_of("Müller-Lüdenscheidt^Anna Maria=ミュラー", " P-3 ", "ACC 4", "CT-Thorax, w/o")
    assert {"MÜLLER-LÜDENSCHEIDT", "MÜLLER", "MULLER", "LÜDENSCHEIDT", "LUDENSCHEIDT"} <= terms
    assert {"ANNA", "MARIA", "ミュラー", "P-3", "P", "3", "ACC 4", "ACC", "4"} <= terms
    assert {"CT-THORAX", "CT", "THORAX", "W/O", "W", "O"} <= terms
    assert "THORAX," not in terms
    assert all(0 < len(t) <= 64 for t in terms_of("X" * 100, "", "", ""))
    assert query_words(" Doe,  jane* ^x=  -- ct-thorax doe") == ["DOE", "JANE", "X", "CT-THORAX"]


def _terms(conn: Connection) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for term, pk in conn.execute(select(search_terms.c.term, search_terms.c.study_pk)):
        found.setdefault(int(pk), set()).add(term)
    return found


def test_the_migration_writes_the_terms_of_stored_studies(database_url: str) -> None:
    """Studies stored before 0016 get their terms in the upgrade (in batches); downgrade and
    upgrade again, and the batches of :func:`index_all` write the same."""
    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            command.upgrade(alembic_config(conn), "0015")
            conn.commit()
            now = datetime.now(UTC)
            for n in range(5):
                patient = conn.execute(
                    insert(patients)
                    .values(patient_id=f"MIG-{n}", patient_name=f"Ölund^Nils{n}")
                    .returning(patients.c.pk)
                ).scalar_one()
                conn.execute(
                    insert(studies).values(
                        patient_pk=patient,
                        study_uid=f"1.2.3.{n}",
                        accession_number=f"A{n}",
                        study_description="Old study",
                        created_at=now,
                        updated_at=now,
                    )
                )
            conn.commit()
            command.upgrade(alembic_config(conn), "head")
            conn.commit()
            found = _terms(conn)
            assert len(found) == 5
            for n, terms in enumerate(found[pk] for pk in sorted(found)):
                assert {"ÖLUND", "OLUND", f"NILS{n}", f"MIG-{n}", f"A{n}", "OLD", "STUDY"} <= terms
            conn.execute(delete(search_terms))
            assert index_all(conn, batch=2) == sum(len(t) for t in found.values())
            assert _terms(conn) == found
            conn.commit()
            assert conn.execute(select(func.count()).select_from(studies)).scalar_one() == 5
    finally:
        engine.dispose()
