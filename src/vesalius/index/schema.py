"""The index schema: patients, studies, series and instances (PS3.3 information model).

Every attribute that C-FIND and QIDO-RS match on is a column with an index, so no query opens a
DICOM file. Counters and ModalitiesInStudy / SOPClassesInStudy are maintained at ingest.
Person names keep their full Unicode value plus an upper-cased twin for case-insensitive
matching. Dates are ``YYYYMMDD`` and times ``HHMMSS[.F]`` so ranges compare as strings.
Changes go through Alembic migrations in ``index/migrations``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

PK = BigInteger().with_variant(Integer(), "sqlite")


def _s(name: str, _max_length: int = 64) -> Column[str]:
    """A text column. No length limit: real data overruns VR limits and must still be stored."""
    return Column(name, String(), nullable=False, server_default="")


patients = Table(
    "patients",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    _s("patient_id"),
    _s("issuer_of_patient_id"),
    _s("patient_name", 400),
    _s("patient_name_folded", 400),
    _s("patient_birth_date", 8),
    _s("patient_sex", 16),
    Column("num_studies", Integer, nullable=False, server_default="0"),
    Column("num_series", Integer, nullable=False, server_default="0"),
    Column("num_instances", Integer, nullable=False, server_default="0"),
    Index(None, "patient_id", "issuer_of_patient_id", unique=True),
    Index(None, "patient_name"),
    Index(None, "patient_name_folded"),
    Index(None, "patient_birth_date"),
)

studies = Table(
    "studies",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("patient_pk", PK, ForeignKey("patients.pk"), nullable=False),
    _s("study_uid"),
    _s("study_date", 8),
    _s("study_time", 16),
    _s("accession_number", 16),
    _s("study_id", 16),
    _s("study_description"),
    _s("referring_physician_name", 400),
    _s("referring_physician_name_folded", 400),
    _s("modalities_in_study", 256),
    Column("sop_classes_in_study", Text, nullable=False, server_default=""),
    Column("num_series", Integer, nullable=False, server_default="0"),
    Column("num_instances", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(None, "study_uid", unique=True),
    Index(None, "patient_pk"),
    Index(None, "study_date", "study_time"),
    Index(None, "accession_number"),
    Index(None, "study_id"),
    Index(None, "referring_physician_name_folded"),
    Index(None, "created_at"),
)

series = Table(
    "series",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("study_pk", PK, ForeignKey("studies.pk"), nullable=False),
    _s("series_uid"),
    _s("modality", 16),
    Column("series_number", Integer, nullable=True),
    _s("series_description"),
    _s("series_date", 8),
    _s("series_time", 16),
    _s("body_part_examined", 16),
    _s("station_name", 16),
    _s("institution_name"),
    _s("performed_procedure_step_start_date", 8),
    _s("performed_procedure_step_start_time", 16),
    _s("requested_procedure_id", 16),
    _s("scheduled_procedure_step_id", 16),
    Column("num_instances", Integer, nullable=False, server_default="0"),
    Index(None, "series_uid", unique=True),
    Index(None, "study_pk", "modality"),
    Index(None, "modality"),
    Index(None, "series_date"),
)

instances = Table(
    "instances",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("series_pk", PK, ForeignKey("series.pk"), nullable=False),
    _s("sop_instance_uid"),
    _s("sop_class_uid"),
    Column("instance_number", Integer, nullable=True),
    _s("content_date", 8),
    _s("content_time", 16),
    Column("rows", Integer, nullable=True),
    Column("columns", Integer, nullable=True),
    Column("number_of_frames", Integer, nullable=True),
    _s("transfer_syntax_uid"),
    _s("specific_character_set"),
    Column("blob_key", String(64), nullable=False),
    # The id of the blob store holding the file (``storage/stores.py``); rows from before
    # stores had ids are in the folder store (migration 0006).
    Column("blob_store", String(32), nullable=False, server_default="folder"),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    _s("source_ae", 16),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Index(None, "sop_instance_uid", unique=True),
    Index(None, "series_pk", "instance_number"),
    Index(None, "sop_class_uid"),
)

#: WADO-RS metadata (PS3.18 10.4.1.2): each instance's DICOM JSON, zlib-compressed, computed at
#: ingest (``dicom/metadata.py``). A table of its own keeps ``instances`` narrow for queries.
instance_metadata = Table(
    "instance_metadata",
    metadata,
    Column("instance_pk", PK, ForeignKey("instances.pk"), primary_key=True),
    Column("json", LargeBinary, nullable=False),
)

#: Known remote Application Entities (issue 12): seeded from the settings' ``[modalities]``
#: (``source = 'settings'``) or added by an administrator (``'admin'``), shared by every node.
#: ``permissions``: what the peer may do, comma-separated (echo, store, find, move, get, ...).
peers = Table(
    "peers",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("name", String(), nullable=False),
    Column("ae_title", String(16), nullable=False),
    Column("host", String(), nullable=False),
    Column("port", Integer, nullable=False),
    Column("permissions", String(), nullable=False, server_default=""),
    Column("source", String(16), nullable=False, server_default="admin"),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(None, "name", unique=True),
    Index(None, "ae_title"),
)

#: The durable job queue (issue 12): long work (delete, send, ...) that survives a restart, is
#: retried with backoff, reports progress and can be cancelled; any node's runner claims it
#: (``FOR UPDATE SKIP LOCKED`` on PostgreSQL). ``payload`` is JSON.
jobs = Table(
    "jobs",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False),
    Column("run_after", DateTime(timezone=True), nullable=False),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("total", Integer, nullable=False, server_default="0"),
    Column("message", Text, nullable=False, server_default=""),
    Column("owner", String(), nullable=False, server_default=""),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("cancel_requested", Integer, nullable=False, server_default="0"),
    Column("submitted_by", String(), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(None, "state", "run_after"),
)

#: Blobs whose instance rows are gone and whose files are still to be removed: written in the
#: transaction that deletes the rows, cleared once the file is gone, so a crash between the two
#: leaves a note to finish from, never an orphan file nobody knows about.
deleted_blobs = Table(
    "deleted_blobs",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("blob_key", String(64), nullable=False),
    Column("store", String(32), nullable=False, server_default="folder"),  # as blob_store
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# --- issue 14, tls: peers' TLS columns (migration 0007) ---

#: ``tls``: call this peer over TLS (PS3.15 B.9); ``certificate_subject``: the Common Name of
#: the client certificate that names it over mutual TLS (empty: its ``name``).
peers.append_column(Column("tls", Boolean, nullable=False, server_default="0"))
peers.append_column(_s("certificate_subject"))

# --- issue 14, accounts: users, groups, tokens, sessions (migration 0008) ---

#: Users of the HTTP side (issue 14, docs/security.md "Users, roles, sessions and tokens"):
#: ``password_hash`` is an argon2id PHC string (empty: no password, an external login only);
#: ``roles`` comma-separated (``services/policy.py`` ROLE_ACTIONS); ``failed_logins`` and
#: ``locked_until`` throttle password guessing per user.
users = Table(
    "users",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("name", String(), nullable=False),
    Column("password_hash", String(), nullable=False, server_default=""),
    Column("roles", String(), nullable=False, server_default=""),
    Column("disabled", Integer, nullable=False, server_default="0"),
    Column("failed_logins", Integer, nullable=False, server_default="0"),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(None, "name", unique=True),
)

#: Named groups of users, to which access labels may be granted.
user_groups = Table(
    "user_groups",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("name", String(), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index(None, "name", unique=True),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_pk", PK, ForeignKey("user_groups.pk", ondelete="CASCADE"), primary_key=True),
    Column("user_pk", PK, ForeignKey("users.pk", ondelete="CASCADE"), primary_key=True),
    Index(None, "user_pk"),
)

#: API tokens: ``token_id`` is the public part of a token (``ves_<id>_<secret>``);
#: ``secret_hash`` the SHA-256 of the secret, which is shown once and never stored;
#: ``scopes`` the roles the token carries (comma-separated; empty: all of the user's).
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("token_id", String(32), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("user_pk", PK, ForeignKey("users.pk", ondelete="CASCADE"), nullable=False),
    Column("scopes", String(), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Index(None, "token_id", unique=True),
    Index(None, "user_pk"),
)

#: Login sessions, shared by every node: ``session_hash`` is the SHA-256 of the cookie's
#: value (never the value itself); the user's name, roles and groups are kept as at login
#: (an external login has no ``users`` row); ``expires_at`` slides with use.
login_sessions = Table(
    "login_sessions",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("session_hash", String(64), nullable=False),
    Column("user_name", String(), nullable=False),
    Column("roles", String(), nullable=False, server_default=""),
    Column("groups", String(), nullable=False, server_default=""),
    Column("method", String(16), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("client", String(), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index(None, "session_hash", unique=True),
    Index(None, "user_name"),
)

#: Failed logins per client address (the per-user count is on ``users``).
login_failures = Table(
    "login_failures",
    metadata,
    Column("address", String(), primary_key=True),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# --- issue 14, labels: access labels, grants, ingest rules (migration 0009) ---

#: Per-study access labels (docs/security.md, "Per-study access labels"): a study with no row
#: here is visible to whoever may query; a study with rows only to identities granted one of
#: its labels. The primary key (study_pk, label) is what the query filter probes per study.
study_labels = Table(
    "study_labels",
    metadata,
    Column("study_pk", PK, ForeignKey("studies.pk", ondelete="CASCADE"), primary_key=True),
    Column("label", String(64), primary_key=True),
    Index(None, "label"),
)

#: A study's labels, each between spaces (" A B "; empty for none): what the query filter tests
#: (``index/labels.py`` keeps it from ``study_labels`` in the transaction that changes them).
studies.append_column(Column("label_set", Text, nullable=False, server_default=""))

#: Labels granted to a user, a group or a known peer (``grantee_kind``: user, group, peer;
#: ``grantee``: the user name, the group name, or the peer's name in ``peers``).
label_grants = Table(
    "label_grants",
    metadata,
    Column("label", String(64), primary_key=True),
    Column("grantee_kind", String(8), primary_key=True),
    Column("grantee", String(), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

#: Rules that label a study at ingest: when ``keyword`` (a DICOM keyword such as
#: InstitutionName, or ``CallingAETitle``) of an arriving instance matches ``pattern`` (exact,
#: or with ``*`` and ``?`` wildcards), its study gets ``label``.
label_rules = Table(
    "label_rules",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("label", String(64), nullable=False),
    Column("keyword", String(64), nullable=False),
    Column("pattern", String(), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# --- issue 14, audit: the hash-chained audit trail (migration 0010) ---

#: One audit record each (PS3.15 A.5; docs/security.md "Audit trail"): ``record`` is its
#: canonical JSON (the A.5 message's XML inside), ``hash`` = SHA-256(previous hash || record),
#: so changing, removing or inserting a row breaks the chain (``vesalius audit verify``). The
#: other columns repeat what the record says, for queries; verify checks they still agree.
audit_records = Table(
    "audit_records",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("time", String(40), nullable=False, index=True),  # ISO 8601, UTC
    Column("kind", String(64), nullable=False),  # the event, e.g. instances-stored
    Column("message", String(64), nullable=False, index=True),  # A.5 EventID meaning
    Column("outcome", String(16), nullable=False),
    Column("who", String(256), nullable=False, index=True),  # user name or AE title
    Column("host", String(256), nullable=False),  # from where
    Column("record", Text, nullable=False),
    Column("hash", String(64), nullable=False),
)
#: The patients and studies a record names (``subject``: ``patient`` or ``study``).
audit_subjects = Table(
    "audit_subjects",
    metadata,
    Column("record_pk", PK, ForeignKey("audit_records.pk"), nullable=False, index=True),
    Column("subject", String(8), nullable=False),
    Column("value", String(), nullable=False),
    Index("ix_audit_subjects_subject_value", "subject", "value"),
)

# --- issue 14, deid: the pseudonym map (migration 0011) ---

#: Original patient and study <-> their pseudonym and new study (PS3.15 E.1: re-identification by
#: authorised users only, through the ``admin`` action). One row per de-identified study.
pseudonyms = Table(
    "pseudonyms",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    _s("patient_id"),
    _s("issuer_of_patient_id"),
    _s("patient_name"),
    _s("pseudonym"),
    _s("study_uid"),
    _s("new_study_uid"),
    Column("date_offset", Integer, nullable=False, server_default="0"),
    Column("options", Text, nullable=False, server_default=""),
    _s("created_by"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index(None, "pseudonym"),
    Index(None, "new_study_uid"),
)

# --- issue 15, changes: corrections and previous file versions (migration 0012) ---

#: Corrections of patient and study attributes (``services/corrections.py``): what changed
#: (``changes``: JSON {attribute: {"old", "new"}}), the index values before (``previous``) and
#: after (``applied``), JSON, so an undo puts them back; ``state``: pending, applied, failed,
#: undoing, undone, expired (the previous files purged after ``corrections.keep_days``).
corrections = Table(
    "corrections",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    _s("study_uid"),
    Column("changes", Text, nullable=False),
    Column("previous", Text, nullable=False),
    Column("applied", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("message", Text, nullable=False, server_default=""),
    Column("job_pk", PK, nullable=True),
    _s("created_by"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index(None, "study_uid"),
    Index(None, "state", "created_at"),
)

#: Each file a correction rewrote: the instance's previous blob (kept until the correction
#: expires, then purged) and its new one. ``state``: pending (the new blob may exist, the row
#: not yet switched to it), applied, restored (undone), purged.
correction_files = Table(
    "correction_files",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("correction_pk", PK, ForeignKey("corrections.pk"), nullable=False),
    Column("instance_pk", PK, nullable=False),
    Column("old_blob_key", String(64), nullable=False),
    Column("old_blob_store", String(32), nullable=False),
    Column("old_size", BigInteger, nullable=False),
    Column("old_sha256", String(64), nullable=False),
    _s("old_charset"),
    Column("new_blob_key", String(64), nullable=False),
    Column("new_blob_store", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Index(None, "correction_pk", "instance_pk", unique=True),
)

# --- issue 15, transfers: peers over DICOMweb (migration 0013) ---

#: A peer's DICOMweb base URL (PS3.18; STOW-RS sends go to ``<url>/studies``), null when it is
#: reached over DIMSE only.
peers.append_column(Column("dicomweb_url", Text, nullable=True))
#: The live updates read the jobs changed since their last look (``updated_at > t``).
Index(None, jobs.c.updated_at)

# --- issue 15, statistics: the sender of each instance (migration 0014) ---

#: Statistics read instances by arrival (ingest per hour and day, the storage forecast) with
#: their sizes: answered from this index alone. ``instances.source_ae`` names who sent each one
#: (a calling AE title, or the user of a STOW-RS request, an upload or an import).
Index(None, instances.c.received_at, instances.c.size)

# --- issue 15, resources: the study list (migration 0015) ---

#: The study list's total under the access-label condition reads this index, not the rows.
Index(None, studies.c.label_set)

# --- issue 15, search: the study list's free text (migration 0016) ---

#: The longest search term kept (longer words are cut: a prefix search still finds them).
TERM_LENGTH = 64
#: The words of each study's free text (``index/search.py``): the components and words of its
#: patient's name, the patient ID, the accession number and the study description's words,
#: case-folded. A word of the search matches a study when one of its terms starts with it: a
#: range scan of the primary key ``(term, study_pk)``. PostgreSQL compares the terms in the
#: ``C`` collation (bytes), so the range ``[word, word + U+10FFFF)`` is exactly "starts with"
#: whatever the database's locale; SQLite's default collation already compares bytes.
search_terms = Table(
    "search_terms",
    metadata,
    Column(
        "term",
        String(TERM_LENGTH).with_variant(String(TERM_LENGTH, collation="C"), "postgresql"),
        primary_key=True,
    ),
    Column("study_pk", PK, primary_key=True, autoincrement=False),
    Index(None, "study_pk"),
)

# --- issue 15 follow-up: study search terms written off the ingest commit (migration 0017) ---

#: Studies made whose search terms are not written yet (``index/search.py``): ingest notes a
#: new study here, one short row appended to a small table, instead of writing its terms in
#: the instance's transaction (on SQLite each term is another B-tree page the commit writes);
#: the search indexer (``services/search_index.py``) writes them in batches and removes the
#: rows, and a search matches the studies still listed here by their values directly.
search_backlog = Table(
    "search_backlog",
    metadata,
    Column("study_pk", PK, primary_key=True, autoincrement=False),
)

# --- issue 15, live updates: studies deleted or corrected, for every node (migration 0018) ---

#: The change feed of studies deleted or corrected (``index/changes.py``): one row per study
#: and change, written in the transaction that deletes its instances or applies (or undoes) a
#: correction, so the live updates of every process and node hear of it by reading the rows
#: since their last look (``changed_at``; stores need no row: ``instances.received_at`` tells
#: of them). ``change``: ``deleted`` or ``corrected``; ``label_set``: the study's access labels
#: then (as ``studies.label_set``), for a deleted study cannot be looked up. Pruned after a day.
study_changes = Table(
    "study_changes",
    metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    _s("study_uid"),
    Column("change", String(16), nullable=False),
    Column("label_set", Text, nullable=False, server_default=""),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Index(None, "changed_at"),
)

# --- issue 15, transfers: a login for a peer's DICOMweb service (migration 0019) ---

#: How we log in to the peer's DICOMweb service: ``dicomweb_auth`` ``""`` (none), ``basic``
#: (RFC 7617, with ``dicomweb_user``) or ``bearer`` (RFC 6750); ``dicomweb_secret`` the
#: password or token, kept to be sent and never returned by the API (``services/peers.py``).
peers.append_column(Column("dicomweb_auth", String(16), nullable=False, server_default=""))
peers.append_column(Column("dicomweb_user", Text, nullable=False, server_default=""))
peers.append_column(Column("dicomweb_secret", Text, nullable=False, server_default=""))

# --- issue 15, statistics at scale: the statistics snapshot (migration 0020) ---

#: What ``GET /api/v1/statistics`` would otherwise read whole tables for, as of a moment
#: (``index/statistics_snapshot.py``): per sender the instances and bytes, per modality the
#: instances and the studies, among the instances that arrived before ``cutoff`` and the series
#: made until then (``payload``, JSON). Shared by every node; nothing at ingest writes it; a
#: reader adds what arrived since and computes it afresh when rows it counted changed.
statistics_snapshots = Table(
    "statistics_snapshots",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("cutoff", DateTime(timezone=True), nullable=False),
    Column("computed_at", DateTime(timezone=True), nullable=False),
    Column("payload", Text, nullable=False),
)

# --- issue 15 follow-up: the study list's "updated" sort and description (migration 0021) ---

#: The "updated" sort (``-updated``: most recently changed first) and its keyset pages read
#: this index. Ingest moves ``updated_at`` at most once a second per study (``index/records.py``),
#: so a stored instance seldom changes an indexed column of its study (on PostgreSQL, an update
#: that changes none stays a HOT update, with no new entry in the study's other indexes).
Index(None, studies.c.updated_at, studies.c.pk)
#: The study list's ``description`` filter (``index/description.py``): the description
#: case-folded (wild card patterns) and its words between spaces (word starts).
studies.append_column(
    Column("study_description_folded", String(), nullable=False, server_default="")
)
studies.append_column(Column("study_description_words", Text, nullable=False, server_default=""))
