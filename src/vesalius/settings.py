"""Settings: one declared table, read from a TOML file and ``VESALIUS_*`` environment variables.

Precedence, lowest first: built-in default, TOML file, environment. Every setting is listed in
:data:`SETTINGS`; docs/configuration.md documents the same table and a test keeps them in step.
Remote AEs live under ``[modalities.NAME]`` in TOML, or ``VESALIUS_MODALITY_<NAME>=AET@HOST:PORT``
(followed by a space and a comma list of permissions, to state them).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vesalius.errors import ConfigError, ConfigFileError


@dataclass(frozen=True)
class Setting:
    """One declared setting: dotted key, type, default and a line of help."""

    key: str
    type: type
    default: Any
    help: str

    @property
    def env_var(self) -> str:
        return "VESALIUS_" + self.key.replace(".", "_").upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", str, "vesalius-data", "Folder for images and, by default, the index."),
    Setting(
        "database_url",
        str,
        "",
        "Empty: SQLite in data_dir. Or a SQLAlchemy URL, e.g. postgresql://user@host/db.",
    ),
    Setting("log_level", str, "info", "Logging level: debug, info, warning, error."),
    Setting(
        "log.format",
        str,
        "logfmt",
        "Log line format: logfmt (key=value) or json (one JSON object per line); one format for "
        "every line.",
    ),
    Setting(
        "log.file",
        str,
        "",
        "Empty: log to stderr (journald, containers). Or a file (relative: in data_dir), "
        "written and rotated by the main process only.",
    ),
    Setting(
        "log.max_mb",
        float,
        100.0,
        "Rotate log.file when it reaches this many MiB (0 = never: rotated by logrotate, "
        "reopened when moved).",
    ),
    Setting("log.backups", int, 5, "Rotated log files kept (log.file.1 to log.file.N)."),
    Setting("log.access", bool, True, "Log one line per HTTP request (the access log)."),
    Setting(
        "audit.file",
        str,
        "",
        "The audit trail, one JSON object per line, written whatever log_level says. Empty: "
        "audit.log in data_dir; a path (relative: in data_dir); or - for with the log.",
    ),
    Setting(
        "anonymize.secret_file",
        str,
        "",
        "Key of de-identification (UIDs, pseudonyms, date offsets; PS3.15 Annex E), made at "
        "first use with mode 0600. Empty: anonymize.secret in data_dir; a path (relative: in "
        "data_dir). Keep it safe and keep it: a new one gives the same studies new UIDs.",
    ),
    Setting(
        "corrections.keep_days",
        float,
        30.0,
        "Days the previous version of each file a correction rewrote is kept, so the "
        "correction can be undone; then it is removed. 0: removed at the next sweep.",
    ),
    Setting(
        "audit.source_id",
        str,
        "",
        "The AuditSourceID of the audit messages (PS3.15 A.5). Empty: the AE title and the host "
        "name, AE@host.",
    ),
    Setting(
        "audit.site_id",
        str,
        "",
        "The AuditEnterpriseSiteID of the audit messages (e.g. the hospital); empty: left out.",
    ),
    Setting(
        "audit.interval",
        float,
        1.0,
        "Instances an association, HTTP request or import stores into a study become one audit "
        "record when it ends, or after this many seconds without another.",
    ),
    Setting(
        "audit.syslog_url",
        str,
        "",
        "Forward audit messages to a syslog collector (RFC 5424): udp://host:514 (RFC 5426) or "
        "tls://host:6514 (RFC 5425). Empty: not forwarded.",
    ),
    Setting(
        "audit.syslog_app_name",
        str,
        "vesalius",
        "The APP-NAME of the syslog messages.",
    ),
    Setting(
        "audit.syslog_ca",
        str,
        "",
        "PEM file of the CA that signs the collector's certificate (tls://). Empty: "
        "tls.ca_certificates if set, else the system's CAs.",
    ),
    Setting(
        "audit.syslog_queue",
        int,
        10000,
        "Audit messages held for the collector while it is slow or down; beyond that they are "
        "dropped (counted and logged; the index keeps them all).",
    ),
    Setting(
        "shutdown_grace",
        float,
        10.0,
        "Seconds that running associations, HTTP requests and jobs get to finish after "
        "SIGTERM/SIGINT; then peers still associated get an A-ABORT and jobs go back to the queue.",
    ),
    Setting("dicom.ae_title", str, "VESALIUS", "AE title of the DIMSE server."),
    Setting("dicom.host", str, "0.0.0.0", "Address the DIMSE server listens on."),
    Setting("dicom.port", int, 11112, "TCP port of the DIMSE server."),
    Setting(
        "dicom.tls_port",
        int,
        2762,
        "TCP port of DIMSE over TLS (PS3.15 B.9), served when tls.certificate is set; -1: not "
        "served.",
    ),
    Setting(
        "dicom.plain",
        bool,
        True,
        "Serve plain DIMSE on dicom.port; false (with TLS on): DIMSE over TLS only.",
    ),
    Setting(
        "dicom.max_associations",
        int,
        32,
        "Most concurrent associations accepted, over all processes (more: A-ASSOCIATE-RJ, "
        "transient, local limit exceeded).",
    ),
    Setting(
        "dicom.max_associations_per_host",
        int,
        8,
        "Most concurrent connections from one IP address (0 = no limit); more are rejected "
        "like dicom.max_associations, so one host cannot take every slot.",
    ),
    Setting(
        "dicom.workers",
        int,
        0,
        "Processes serving the DIMSE and HTTP ports, the main one included (0 = one per CPU"
        " core, at most 4); each has its own handle on the shared index and storage.",
    ),
    Setting("dicom.max_pdu", int, 262144, "Maximum PDU length we receive (bytes, 0 = any)."),
    Setting(
        "dicom.acse_timeout",
        float,
        30.0,
        "ARTIM timer (PS3.8 9.1.5): seconds from connection to a complete A-ASSOCIATE-RQ, and "
        "to wait for association answers.",
    ),
    Setting(
        "dicom.dimse_timeout",
        float,
        60.0,
        "Seconds a whole DIMSE message may take to arrive from its first byte (extended by "
        "dicom.min_receive_rate), and to wait for a peer's response.",
    ),
    Setting(
        "dicom.network_timeout",
        float,
        60.0,
        "Seconds an association may stay idle between messages, and a whole PDU may take to "
        "arrive from its first byte (extended by dicom.min_receive_rate).",
    ),
    Setting(
        "dicom.min_receive_rate",
        int,
        1024,
        "Bytes per second a large message must keep up on average: each such many bytes "
        "received extend the PDU and message deadlines by a second.",
    ),
    Setting(
        "dicom.require_called_ae",
        bool,
        False,
        "Reject associations whose Called AE title is not dicom.ae_title.",
    ),
    Setting(
        "dicom.known_callers_only",
        bool,
        False,
        "Reject associations from AE titles that are not known peers ([modalities] and peers "
        "added at run time).",
    ),
    Setting(
        "dicom.unknown_caller_permissions",
        str,
        "echo,store",
        "What a calling AE that is not a known peer may do: a comma list of echo, store, find, "
        "move, get, commitment, worklist, or all. Empty: such callers are rejected at "
        "association.",
    ),
    Setting(
        "dicom.check_caller_host",
        bool,
        False,
        "Reject an association from a known peer's AE title that comes from another address "
        "than the peer's host.",
    ),
    Setting(
        "labels.cache_seconds",
        float,
        5.0,
        "How long label grants, ingest rules and peer permissions are kept in memory; an "
        "administrator's change applies within this many seconds.",
    ),
    Setting("http.host", str, "127.0.0.1", "Address the HTTP server listens on."),
    Setting("http.port", int, 8080, "TCP port of the HTTP server."),
    Setting(
        "http.tls",
        bool,
        False,
        "Serve HTTPS (with tls.certificate) instead of HTTP on http.port, with HSTS.",
    ),
    Setting(
        "ingest.duplicate_policy",
        str,
        "keep",
        "A second copy of a stored SOP Instance UID: keep (the first copy stays; a copy that "
        "differs is answered with warning 0xB006 and audited), replace, or reject (0x0111).",
    ),
    Setting(
        "ingest.max_inflated_mb",
        int,
        256,
        "Largest data set a Deflated Explicit VR Little Endian instance may inflate to (MiB; "
        "0 = no limit); larger is refused (0xA700) and nothing is stored.",
    ),
    Setting(
        "jobs.poll_interval",
        float,
        1.0,
        "Seconds a job runner waits between looks for queued work when it has none.",
    ),
    Setting(
        "jobs.stale_after",
        float,
        60.0,
        "Seconds after which a running job whose runner stopped reporting (its process died) "
        "is taken back and run again.",
    ),
    Setting(
        "jobs.max_attempts",
        int,
        5,
        "Times a job is tried before it is left failed (retry it with `vesalius jobs retry`).",
    ),
    Setting(
        "jobs.retry_after",
        float,
        10.0,
        "Seconds before a failed job's first retry; each later retry waits twice as long "
        "(at most an hour).",
    ),
    Setting(
        "storage.fsync",
        bool,
        False,
        "fsync each file before it is indexed (survives power loss, slower).",
    ),
    Setting(
        "storage.min_free_mb",
        int,
        100,
        "Refuse to store (0xA700) when less than this many MiB are free.",
    ),
    Setting(
        "query.case_insensitive_pn",
        bool,
        True,
        "Match person names case-insensitively (PS3.4 C.2.2.2.4 allows it).",
    ),
    Setting("query.max_results", int, 0, "Most C-FIND matches returned (0 = no limit)."),
    Setting(
        "query.remote_timeout",
        float,
        30.0,
        "Seconds a query of a remote AE (C-FIND from the REST API and the UI) may take in all.",
    ),
    Setting(
        "query.remote_max_results",
        int,
        1000,
        "Most matches a query of a remote AE returns; past it the C-FIND is cancelled.",
    ),
    Setting(
        "auth.required",
        str,
        "auto",
        "Require a login, token or Basic credentials on HTTP: true, false, or auto (true when "
        "http.host is not a loopback address; false there is refused at start).",
    ),
    Setting(
        "auth.anonymous_roles",
        str,
        "admin",
        "Roles of HTTP requests without credentials while authentication is off (comma-separated).",
    ),
    Setting(
        "auth.basic",
        bool,
        False,
        "Accept HTTP Basic credentials (for DICOMweb clients that know nothing else); only "
        "ever over HTTPS.",
    ),
    Setting(
        "auth.session_minutes",
        float,
        480.0,
        "Minutes of inactivity after which a login session ends.",
    ),
    Setting(
        "auth.max_failures",
        int,
        5,
        "Failed logins in a row after which a user is locked (auth.lockout_minutes, doubled "
        "for each further failure, at most a day).",
    ),
    Setting(
        "auth.max_failures_per_address",
        int,
        20,
        "Failed logins after which a client address is locked the same way.",
    ),
    Setting(
        "auth.lockout_minutes",
        float,
        15.0,
        "Minutes of the first lock after too many failed logins.",
    ),
    Setting(
        "auth.oidc_issuer",
        str,
        "",
        "OpenID Connect: the provider's issuer URL (https; http only on loopback); empty: "
        "OpenID Connect off. Sign-in at /auth/oidc/login.",
    ),
    Setting("auth.oidc_client_id", str, "", "OpenID Connect: this server's client ID."),
    Setting(
        "auth.oidc_client_secret",
        str,
        "",
        "OpenID Connect: the client secret (or auth.oidc_client_secret_file).",
    ),
    Setting(
        "auth.oidc_client_secret_file",
        str,
        "",
        "OpenID Connect: a file holding the client secret (relative: to the settings file).",
    ),
    Setting(
        "auth.oidc_scopes",
        str,
        "openid profile email",
        "OpenID Connect: the scopes asked for at sign-in (openid first; add the one that "
        "releases the groups claim, if the provider has one).",
    ),
    Setting(
        "auth.oidc_groups_claim",
        str,
        "groups",
        "OpenID Connect: the claim listing a user's groups (a dotted path reaches inside "
        "objects, e.g. realm_access.roles).",
    ),
    Setting(
        "auth.oidc_username_claim",
        str,
        "preferred_username",
        "OpenID Connect: the claim naming the user (sub when absent).",
    ),
    Setting(
        "auth.oidc_role_map",
        str,
        "",
        "OpenID Connect: groups to Vesalius roles, e.g. pacs-admins=admin,radiology=radiologist; "
        "a user with no mapped group is refused.",
    ),
    Setting(
        "auth.oidc_audience",
        str,
        "",
        "OpenID Connect: the aud a provider's JWT access token must carry to be accepted as a "
        "bearer token; empty: such tokens are not accepted.",
    ),
    Setting(
        "http.cors_origins",
        str,
        "",
        "Origins allowed to call the HTTP APIs from a browser (comma-separated, * for any; "
        "empty: same origin only).",
    ),
    Setting(
        "http.public_url",
        str,
        "",
        "URL clients reach this server at (e.g. https://pacs.example.org behind a proxy), used "
        "in RetrieveURLs and BulkDataURIs. Empty: taken from each request's Host header.",
    ),
    Setting(
        "http.max_upload_mb",
        int,
        4096,
        "Largest STOW-RS or REST API upload request body, after decompression, and largest "
        "content of an uploaded zip (MiB; 0 = no limit); larger gets 413.",
    ),
    Setting(
        "http.max_inflation_ratio",
        int,
        100,
        "A gzip or deflate coded request body may decode to at most this many times the bytes "
        "received (past its first MiB); more is refused with 413 as a decompression bomb.",
    ),
    Setting(
        "http.header_timeout",
        float,
        10.0,
        "Seconds a client has, from connecting or from the first byte of a request, to send "
        "the request line and headers; then 408 and the connection is closed.",
    ),
    Setting(
        "http.keepalive_timeout",
        float,
        5.0,
        "Seconds an idle keep-alive connection stays open between requests.",
    ),
    Setting(
        "http.body_timeout",
        float,
        30.0,
        "Seconds a request body may go without a byte arriving (while the server is reading); "
        "then 408 and the connection is closed.",
    ),
    Setting(
        "http.send_timeout",
        float,
        60.0,
        "Seconds a response may wait on a client that reads nothing before the connection is "
        "closed.",
    ),
    Setting(
        "http.max_connections",
        int,
        1000,
        "Most open HTTP connections per process; more are answered 503 and closed.",
    ),
    Setting(
        "viewer.enabled",
        bool,
        True,
        "Serve the OHIF viewer at / (e.g. /viewer?StudyInstanceUIDs=…).",
    ),
    Setting(
        "viewer.version", str, "3.13.2", "OHIF version (@ohif/app on npm) to install and serve."
    ),
    Setting(
        "viewer.dir",
        str,
        "",
        "Folder of installed OHIF versions (<dir>/<version>), or one OHIF build (has index.html). "
        "Empty: <sys.prefix>/share/vesalius/ohif.",
    ),
    Setting(
        "viewer.npm_registry",
        str,
        "https://registry.npmjs.org",
        "npm registry that `vesalius viewer install` downloads @ohif/app from.",
    ),
    Setting(
        "ui.enabled",
        bool,
        True,
        "Serve the web UI at / (study list, study pages, jobs, peers, statistics, audit).",
    ),
    Setting(
        "ui.assets_dir",
        str,
        "",
        "Folder of the UI's front-end packages from npm (`vesalius ui install`). "
        "Empty: <sys.prefix>/share/vesalius/frontend.",
    ),
    Setting(
        "metrics.enabled",
        bool,
        True,
        "Count Prometheus metrics and serve them at /metrics.",
    ),
    Setting(
        "tls.certificate",
        str,
        "",
        "Our certificate chain (PEM; relative: to the settings file), for DIMSE over TLS, "
        "HTTPS and mutual TLS as a client. Reloaded when the file changes.",
    ),
    Setting("tls.private_key", str, "", "The certificate's private key (PEM, unencrypted)."),
    Setting(
        "tls.ca_certificates",
        str,
        "",
        "Authorities (PEM) that sign peers' certificates: checked on servers we call and on "
        "clients. Empty: the system's authorities.",
    ),
    Setting(
        "tls.verify_clients",
        str,
        "none",
        "Mutual TLS: none, optional (a client certificate is checked when presented) or "
        "required; a client certificate names a known peer (docs/security.md).",
    ),
    Setting(
        "tracing.otlp_endpoint",
        str,
        "",
        "OTLP/HTTP traces URL to export OpenTelemetry spans to (e.g. "
        "http://localhost:4318/v1/traces; needs the tracing extra). Empty: no tracing.",
    ),
)

_BY_KEY = {s.key: s for s in SETTINGS}
_DUPLICATE_POLICIES = ("replace", "keep", "reject")
#: Settings that take one of a few words (compared in lower case).
_CHOICES: dict[str, tuple[str, ...]] = {
    "log_level": ("debug", "info", "warning", "error", "critical"),
    "log.format": ("logfmt", "json"),
    "ingest.duplicate_policy": _DUPLICATE_POLICIES,
    "auth.required": ("auto", "true", "false"),
    "tls.verify_clients": ("none", "optional", "required"),
}
#: Text settings that also take a boolean (``[auth] required = true``).
_TRI_STATE = ("auth.required",)
#: TCP ports: 1 to 65535, or 0 for one the system picks (tests).
_PORTS = ("dicom.port", "http.port")
#: Paths: relative ones are resolved against the folder of the settings file that names them
#: (from the environment or the command line: against the current folder).
_PATH_KEYS = (
    "data_dir",
    "viewer.dir",
    "ui.assets_dir",
    "auth.oidc_client_secret_file",
    "tls.certificate",
    "tls.private_key",
    "tls.ca_certificates",
)
#: ``VESALIUS_*`` variables Vesalius (or its test suite and benchmark) reads besides the
#: settings'; any other is refused as a likely misspelling.
OTHER_VARIABLES = (
    "VESALIUS_CONFIG",
    "VESALIUS_DEBUG",
    "VESALIUS_REQUIRE_POSTGRES",
    "VESALIUS_REQUIRE_BROWSER",
    "VESALIUS_REQUIRE_OIDC",
)
#: Prefixes of further variables that are not settings: the modalities, the test suite's and
#: the benchmark's.
OTHER_PREFIXES = ("VESALIUS_MODALITY_", "VESALIUS_TEST_", "VESALIUS_BENCH_")
#: Database URL schemes (``dialect`` or ``dialect+driver``) Vesalius runs on.
_DATABASES = {
    "sqlite": ("", "pysqlite"),
    "postgresql": ("", "psycopg"),
    "postgres": ("",),
}
#: Limits and timeouts where 0 means "no limit" or makes sense; negative never does.
_NON_NEGATIVE = (
    "shutdown_grace",
    "corrections.keep_days",
    "labels.cache_seconds",
    "dicom.workers",
    "log.max_mb",
    "log.backups",
    "dicom.max_associations_per_host",
    "dicom.max_pdu",
    "ingest.max_inflated_mb",
    "http.max_upload_mb",
    "http.max_inflation_ratio",
    "storage.min_free_mb",
    "query.max_results",
)
#: Limits and timeouts that must be positive (a zero would refuse everything or wait forever).
_POSITIVE = (
    "dicom.max_associations",
    "dicom.acse_timeout",
    "dicom.dimse_timeout",
    "dicom.network_timeout",
    "dicom.min_receive_rate",
    "jobs.poll_interval",
    "jobs.stale_after",
    "jobs.max_attempts",
    "jobs.retry_after",
    "http.header_timeout",
    "http.keepalive_timeout",
    "http.body_timeout",
    "http.send_timeout",
    "http.max_connections",
    "auth.session_minutes",
    "auth.max_failures",
    "auth.max_failures_per_address",
    "auth.lockout_minutes",
)
#: The user roles (``services/policy.py`` ROLE_ACTIONS; a test keeps them in step), which
#: ``auth.oidc_role_map`` may name.
ROLES = ("admin", "radiologist", "technologist", "researcher", "auditor")
_MODALITY_RE = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:]+|\[[^\]]+\]):(?P<port>\d{1,5})$")


#: What a remote AE may be permitted (docs/security.md, "Remote AEs").
PEER_PERMISSIONS = ("echo", "store", "find", "move", "get", "commitment", "worklist")


def parse_permissions(text: str | Iterable[str]) -> frozenset[str]:
    """A comma list (or a list) of :data:`PEER_PERMISSIONS`, or ``all``;
    :class:`ConfigError` names an unknown one."""
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    wanted = {item.strip().lower() for item in items if item.strip()}
    if "all" in wanted:
        return frozenset(PEER_PERMISSIONS)
    unknown = sorted(wanted - set(PEER_PERMISSIONS))
    if unknown:
        raise ConfigError(
            f"unknown permission(s) {', '.join(unknown)}: use {', '.join(PEER_PERMISSIONS)} or all"
        )
    return frozenset(wanted)


@dataclass(frozen=True)
class Modality:
    """A known remote AE: a C-MOVE destination and a target for ``vesalius send``, with what
    it may do (``permissions``; None: the defaults of a known peer)."""

    name: str
    ae_title: str
    host: str
    port: int
    permissions: frozenset[str] | None = None
    #: Call this peer over TLS (PS3.15 B.9); with mutual TLS, the client certificate Common
    #: Name that names it (empty: its name).
    tls: bool = False
    certificate_subject: str = ""

    @classmethod
    def parse(cls, text: str, name: str = "") -> Modality:
        """Parse ``AET@HOST:PORT``, optionally followed by a space and a comma list of
        permissions (``WS1@10.0.0.5:104 echo,find,move``)."""
        address, _, stated = text.strip().partition(" ")
        match = _MODALITY_RE.match(address)
        if not match:
            raise ConfigError(f"expected AET@HOST:PORT [PERMISSIONS], got {text!r}")
        host = match["host"].strip("[]")
        permissions = parse_permissions(stated) if stated.strip() else None
        return cls(name or match["aet"], match["aet"], host, int(match["port"]), permissions)


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Read a value with ``settings["dicom.port"]`` or the typed properties."""

    values: Mapping[str, Any]
    modalities: Mapping[str, Modality] = field(default_factory=dict)
    #: Where each value not a default came from: "file", "env" or "override".
    sources: Mapping[str, str] = field(default_factory=dict)
    config_file: Path | None = None

    def origin(self, key: str) -> str:
        """Where the value of ``key`` was set, for messages ("set in FILE", …)."""
        source = self.sources.get(key)
        if source == "file":
            return f"set in {self.config_file}"
        if source == "env":
            return f"set by {_BY_KEY[key].env_var}"
        if source == "override":
            return "set on the command line"
        return "the default"

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def data_dir(self) -> Path:
        return Path(self.values["data_dir"])

    @property
    def database_url(self) -> str:
        url = str(self.values["database_url"])
        if url:
            return url
        return f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    def modality_by_ae(self, ae_title: str) -> Modality | None:
        """The configured modality with this AE title, if any."""
        for modality in self.modalities.values():
            if modality.ae_title == ae_title:
                return modality
        return None

    def resolve_peer(self, target: str) -> Modality:
        """A modality by name or AE title, or an ``AET@HOST:PORT`` literal."""
        if target in self.modalities:
            return self.modalities[target]
        found = self.modality_by_ae(target)
        if found:
            return found
        if "@" in target:
            return Modality.parse(target)
        raise ConfigError(
            f"unknown modality {target!r}: name one under [modalities] or AET@HOST:PORT"
        )


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_SCHEME_RE = re.compile(r"^(?P<dialect>[A-Za-z][A-Za-z0-9]*)(\+(?P<driver>[A-Za-z0-9_]+))?://")
_SQLITE_PATH_RE = re.compile(r"^(?P<scheme>sqlite(\+\w+)?:///)(?P<path>[^?]*)(?P<query>\?.*)?$")


def _coerce(setting: Setting, raw: Any, strict: bool) -> Any:
    """``raw`` as the setting's type; ValueError when it is not one. ``strict``: ``raw`` comes
    from TOML, which has its own types (no text for a number, no 1.5 for an integer)."""
    if setting.key in _TRI_STATE:
        text = str(raw).strip().lower()
        aliases = {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false"}
        return aliases.get(text, "false" if text == "off" else text)
    if setting.type is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if not strict and text in ("1", "true", "yes", "on"):
            return True
        if not strict and text in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if isinstance(raw, bool) or (strict and isinstance(raw, str) and setting.type is not str):
        raise ValueError(raw)
    if setting.type is int and isinstance(raw, float):
        raise ValueError(raw)
    if setting.type is str and strict and not isinstance(raw, str):
        raise ValueError(raw)
    if setting.type is str:
        return str(raw)
    if isinstance(raw, (dict, list)):
        raise ValueError(raw)
    return setting.type(str(raw).strip() if isinstance(raw, str) else raw)


def _flag(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise ValueError(raw)
    return raw


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and dotted not in _BY_KEY:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _suggest(word: str, known: Iterable[str]) -> str:
    """``" (did you mean X?)"`` for the closest of ``known``, or nothing."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class _Checker:
    """Collects every problem of a set of settings, each as one line naming where it is."""

    def __init__(self, config_file: Path | None) -> None:
        self.config_file = config_file
        self.problems: list[str] = []
        self.sources: dict[str, str] = {}

    def where(self, key: str) -> str:
        source = self.sources.get(key, "default")
        if source == "file":
            return f"{self.config_file}: {key}"
        if source == "env":
            return f"environment variable {_BY_KEY[key].env_var}"
        if source == "override":
            return f"command line: {key}"
        return f"default {key}"

    def add(self, text: str) -> None:
        self.problems.append(text)

    def set(self, values: dict[str, Any], key: str, raw: Any, source: str) -> None:
        setting = _BY_KEY[key]
        self.sources[key] = source
        try:
            values[key] = _coerce(setting, raw, strict=source == "file")
        except (TypeError, ValueError):
            example = setting.default if setting.type is not bool else "true"
            if isinstance(example, str):
                example = f'"{example}"'
            self.add(
                f"{self.where(key)} must be {_TYPE_NAMES[setting.type]}, got {raw!r}: "
                f"write e.g. {str(example).lower() if setting.type is bool else example}"
            )


def _read_toml(config_file: Path) -> dict[str, Any]:
    try:
        with open(config_file, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigFileError(
            f"cannot read the settings file {config_file} (from --config or VESALIUS_CONFIG): "
            f"{exc.strerror}; check the path"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{config_file}: not valid TOML: {exc}; fix the file there (see docs/configuration.md)"
        ) from None


def _resolve_path(value: str, base: Path) -> str:
    """``value`` (``~`` expanded) made absolute against ``base``; empty stays empty."""
    if not value:
        return value
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def _check_database_url(check: _Checker, url: str) -> None:
    if not url:
        return
    match = _SCHEME_RE.match(url)
    hint = (
        "leave it empty for SQLite in data_dir, or give sqlite:///PATH or "
        "postgresql://USER@HOST/DATABASE"
    )
    if not match:
        check.add(f"{check.where('database_url')} is not a database URL: {hint}")
        return
    dialect, driver = match["dialect"].lower(), (match["driver"] or "").lower()
    if dialect not in _DATABASES:
        check.add(
            f"{check.where('database_url')}: {dialect} is not supported (Vesalius runs on SQLite "
            f"and PostgreSQL): {hint}"
        )
    elif driver not in _DATABASES[dialect]:
        check.add(
            f"{check.where('database_url')}: driver {driver} is not supported for {dialect}: "
            f"write {dialect}:// (psycopg 3 is used for PostgreSQL)"
        )


def _wildcard(host: str) -> bool:
    return host.strip() in ("", "0.0.0.0", "::", "[::]")


def _check_oidc(check: _Checker, values: dict[str, Any]) -> None:
    """OpenID Connect (``auth.oidc_*``): an issuer URL, a client, a role map of known roles."""
    issuer = str(values["auth.oidc_issuer"]).strip()
    if not issuer:
        return
    where = check.where("auth.oidc_issuer")
    url = urlsplit(issuer)
    if url.scheme not in ("https", "http") or not url.hostname or url.query or url.fragment:
        check.add(f"{where} must be the provider's issuer URL (https://HOST/...), got {issuer!r}")
    elif url.scheme == "http" and url.hostname not in ("127.0.0.1", "::1", "localhost"):
        check.add(f"{where} must use https (http only for a provider on loopback)")
    if not str(values["auth.oidc_client_id"]).strip():
        check.add(f"{check.where('auth.oidc_client_id')} is empty: OpenID Connect needs a client")
    secret, secret_file = values["auth.oidc_client_secret"], values["auth.oidc_client_secret_file"]
    if bool(secret) == bool(secret_file):
        check.add(
            f"{check.where('auth.oidc_client_secret')}: give the client secret either there or "
            "in auth.oidc_client_secret_file (one of them)"
        )
    if "openid" not in str(values["auth.oidc_scopes"]).split():
        check.add(f"{check.where('auth.oidc_scopes')} must include openid")
    for item in str(values["auth.oidc_role_map"]).split(","):
        group, sep, role = item.rpartition("=")
        if not item.strip():
            continue
        if not sep or not group.strip() or not role.strip():
            check.add(
                f"{check.where('auth.oidc_role_map')}: {item.strip()!r} is not GROUP=ROLE "
                "(e.g. pacs-admins=admin,radiology=radiologist)"
            )
        elif role.strip() not in ROLES:
            check.add(
                f"{check.where('auth.oidc_role_map')}: unknown role {role.strip()!r}: the roles "
                f"are {', '.join(ROLES)}" + _suggest(role.strip(), ROLES)
            )
    if not str(values["auth.oidc_role_map"]).strip():
        check.add(
            f"{check.where('auth.oidc_role_map')} is empty: map at least one group to a role "
            "(e.g. radiology=radiologist), or no one can sign in"
        )


def _check_values(check: _Checker, values: dict[str, Any]) -> None:
    """Ranges, choices and contradictions, once every value has its type."""
    for key, choices in _CHOICES.items():
        if key in values and isinstance(values[key], str):
            values[key] = values[key].strip().lower()
            if values[key] not in choices:
                check.add(
                    f"{check.where(key)} must be one of {', '.join(choices)}, got "
                    f"{values[key]!r}" + _suggest(values[key], choices)
                )
    for key in _PORTS:
        if isinstance(values[key], int) and not 0 <= values[key] <= 65535:
            check.add(f"{check.where(key)} is {values[key]}: a TCP port is 1 to 65535")
    for key in _NON_NEGATIVE:
        if isinstance(values[key], int | float) and values[key] < 0:
            check.add(f"{check.where(key)} must not be negative, got {values[key]}")
    for key in _POSITIVE:
        if isinstance(values[key], int | float) and values[key] <= 0:
            check.add(f"{check.where(key)} must be greater than 0, got {values[key]}")
    if not 1 <= len(str(values["dicom.ae_title"]).strip()) <= 16:
        check.add(f"{check.where('dicom.ae_title')} must be 1 to 16 characters")
    if not str(values["data_dir"]).strip():
        check.add(f"{check.where('data_dir')} is empty: name the folder for the archive")
    dicom, http = values["dicom.port"], values["http.port"]
    hosts = values["dicom.host"], values["http.host"]
    if (
        dicom == http
        and dicom != 0
        and (hosts[0].strip() == hosts[1].strip() or any(_wildcard(h) for h in hosts))
    ):
        check.add(
            f"{check.where('dicom.port')} and {check.where('http.port')} are both {dicom} on "
            f"overlapping addresses ({hosts[0]} and {hosts[1]}): give them different ports"
        )
    _check_database_url(check, str(values["database_url"]))
    _check_oidc(check, values)
    _check_tls(check, values)


def _check_tls(check: _Checker, values: dict[str, Any]) -> None:
    """The TLS settings agree with each other (the files are read at start: ``tls.py``)."""
    port = values["dicom.tls_port"]
    if isinstance(port, int) and not -1 <= port <= 65535:
        check.add(f"{check.where('dicom.tls_port')} is {port}: a TCP port is 1 to 65535 (-1: off)")
    certificate, key = values["tls.certificate"], values["tls.private_key"]
    if bool(certificate) != bool(key):
        check.add(
            f"{check.where('tls.certificate')} and {check.where('tls.private_key')}: set both "
            "(the certificate and its key) or neither"
        )
    if values["http.tls"] and not certificate:
        check.add(f"{check.where('http.tls')} is true: set tls.certificate and tls.private_key")
    if not values["dicom.plain"] and (not certificate or port == -1):
        check.add(
            f"{check.where('dicom.plain')} is false: DIMSE over TLS needs tls.certificate and "
            "a dicom.tls_port"
        )
    if values["tls.verify_clients"] != "none" and not values["tls.ca_certificates"]:
        check.add(
            f"{check.where('tls.verify_clients')} is {values['tls.verify_clients']}: set "
            "tls.ca_certificates to the authorities that sign the clients' certificates"
        )
    if certificate and port not in (-1, 0) and port in (values["dicom.port"], values["http.port"]):
        check.add(f"{check.where('dicom.tls_port')} is {port}, a port taken already: change it")
    try:
        parse_permissions(str(values["dicom.unknown_caller_permissions"]))
    except ConfigError as exc:
        check.add(f"{check.where('dicom.unknown_caller_permissions')}: {exc.message}")


def _check_environment(check: _Checker, env: Mapping[str, str]) -> None:
    known = {s.env_var for s in SETTINGS} | set(OTHER_VARIABLES)
    for var in sorted(env):
        if not var.startswith("VESALIUS_") or var in known or var.startswith(OTHER_PREFIXES):
            continue
        check.add(
            f"environment variable {var} is not a Vesalius setting"
            + (_suggest(var, known) or " (see docs/configuration.md)")
            + ": rename or unset it"
        )


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    cwd: Path | None = None,
    file_dir: Path | None = None,
) -> Settings:
    """Resolve settings from defaults, an optional TOML file, the environment and overrides,
    and check them as a whole: :class:`ConfigError` lists every problem found, one a line.

    Relative paths (``data_dir``, ``viewer.dir``, a SQLite ``database_url``) from the file are
    resolved against the file's folder (or ``file_dir``: where the file will be, for a file
    read under another root); the others against ``cwd`` (default: the current folder)."""
    env = os.environ if environ is None else environ
    here = Path.cwd() if cwd is None else cwd
    values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
    modalities: dict[str, Modality] = {}
    check = _Checker(config_file)

    if config_file is not None:
        document = _read_toml(config_file)
        raw_modalities = document.pop("modalities", {})
        for key, raw in _flatten(document).items():
            if key not in _BY_KEY:
                check.add(
                    f"{config_file}: unknown setting {key!r}"
                    + (_suggest(key, _BY_KEY) or " (see docs/configuration.md)")
                    + ": remove or rename it"
                )
                continue
            check.set(values, key, raw, "file")
        if not isinstance(raw_modalities, Mapping):
            check.add(f"{config_file}: modalities must be tables [modalities.NAME]")
            raw_modalities = {}
        for name, entry in raw_modalities.items():
            try:
                stated = entry.get("permissions")
                modalities[name] = Modality(
                    name,
                    str(entry["ae_title"]),
                    str(entry["host"]),
                    int(entry["port"]),
                    None if stated is None else parse_permissions(stated),
                    tls=_flag(entry.get("tls", False)),
                    certificate_subject=str(entry.get("certificate_subject", "")),
                )
            except ConfigError as exc:
                check.add(f"{config_file}: [modalities.{name}] permissions: {exc.message}")
            except (KeyError, TypeError, ValueError, AttributeError):
                check.add(
                    f"{config_file}: [modalities.{name}] needs ae_title, host and port "
                    "(a string, a string and an integer); tls is true or false"
                )

    for setting in SETTINGS:
        if setting.env_var in env:
            check.set(values, setting.key, env[setting.env_var], "env")
    for var, text in env.items():
        if var.startswith("VESALIUS_MODALITY_"):
            name = var.removeprefix("VESALIUS_MODALITY_")
            try:
                modalities[name] = Modality.parse(text, name)
            except ConfigError as exc:
                check.add(f"environment variable {var}: {exc.message}")
    _check_environment(check, env)

    for key, raw in (overrides or {}).items():
        if key not in _BY_KEY:
            check.add(f"unknown setting {key!r}" + _suggest(key, _BY_KEY))
            continue
        check.set(values, key, raw, "override")

    for name, modality in modalities.items():
        if not 1 <= modality.port <= 65535:
            check.add(f"modality {name}: port {modality.port} is not 1 to 65535")

    _check_values(check, values)  # a value of the wrong type kept its default: checked as one
    if check.problems:
        raise ConfigError("\n".join(check.problems), tuple(check.problems))

    file_base = (
        file_dir
        if file_dir is not None
        else Path(os.path.abspath(config_file)).parent
        if config_file is not None
        else here
    )
    for key in _PATH_KEYS:
        base = file_base if check.sources.get(key) == "file" else here
        values[key] = _resolve_path(str(values[key]), base)
    sqlite = _SQLITE_PATH_RE.match(str(values["database_url"]))
    if sqlite and sqlite["path"] and not sqlite["path"].startswith(("/", ":memory:", "file:")):
        base = file_base if check.sources.get("database_url") == "file" else here
        values["database_url"] = (
            sqlite["scheme"] + _resolve_path(sqlite["path"], base) + (sqlite["query"] or "")
        )
    return Settings(values, modalities, dict(check.sources), config_file)
