"""Settings: one declared table, read from a TOML file and ``VESALIUS_*`` environment variables.

Precedence, lowest first: built-in default, TOML file, environment. Every setting is listed in
:data:`SETTINGS`; docs/configuration.md documents the same table and a test keeps them in step.
Remote AEs live under ``[modalities.NAME]`` in TOML, or ``VESALIUS_MODALITY_<NAME>=AET@HOST:PORT``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vesalius.errors import ConfigError


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
    Setting("http.host", str, "127.0.0.1", "Address the HTTP server listens on."),
    Setting("http.port", int, 8080, "TCP port of the HTTP server."),
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
        "Largest STOW-RS request body, after decompression (MiB; 0 = no limit); larger gets 413.",
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
        "metrics.enabled",
        bool,
        True,
        "Count Prometheus metrics and serve them at /metrics.",
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
#: Limits and timeouts where 0 means "no limit" or makes sense; negative never does.
_NON_NEGATIVE = (
    "shutdown_grace",
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
)
_MODALITY_RE = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:]+|\[[^\]]+\]):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Modality:
    """A known remote AE: a C-MOVE destination and a target for ``vesalius send``."""

    name: str
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, name: str = "") -> Modality:
        """Parse ``AET@HOST:PORT``."""
        match = _MODALITY_RE.match(text.strip())
        if not match:
            raise ConfigError(f"expected AET@HOST:PORT, got {text!r}")
        host = match["host"].strip("[]")
        return cls(name or match["aet"], match["aet"], host, int(match["port"]))


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Read a value with ``settings["dicom.port"]`` or the typed properties."""

    values: Mapping[str, Any]
    modalities: Mapping[str, Modality] = field(default_factory=dict)

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


def _coerce(setting: Setting, raw: Any, source: str) -> Any:
    try:
        if setting.type is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if setting.type is int and isinstance(raw, bool):
            raise ValueError(raw)
        return setting.type(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: {setting.key} must be {setting.type.__name__}, got {raw!r}"
        ) from None


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and dotted not in _BY_KEY:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve settings from defaults, an optional TOML file, the environment and overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {s.key: s.default for s in SETTINGS}
    modalities: dict[str, Modality] = {}

    if config_file is not None:
        try:
            with open(config_file, "rb") as fh:
                document = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file}: {exc}") from None
        raw_modalities = document.pop("modalities", {})
        for key, raw in _flatten(document).items():
            if key not in _BY_KEY:
                raise ConfigError(f"{config_file}: unknown setting {key!r}")
            values[key] = _coerce(_BY_KEY[key], raw, str(config_file))
        if not isinstance(raw_modalities, Mapping):
            raise ConfigError(f"{config_file}: [modalities] must be a table")
        for name, entry in raw_modalities.items():
            try:
                modalities[name] = Modality(
                    name, str(entry["ae_title"]), str(entry["host"]), int(entry["port"])
                )
            except (KeyError, TypeError, ValueError):
                raise ConfigError(
                    f"{config_file}: [modalities.{name}] needs ae_title, host and port"
                ) from None

    for setting in SETTINGS:
        if setting.env_var in env:
            values[setting.key] = _coerce(setting, env[setting.env_var], setting.env_var)
    for var, text in env.items():
        if var.startswith("VESALIUS_MODALITY_"):
            name = var.removeprefix("VESALIUS_MODALITY_")
            modalities[name] = Modality.parse(text, name)

    for key, raw in (overrides or {}).items():
        if key not in _BY_KEY:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = _coerce(_BY_KEY[key], raw, "override")

    if values["ingest.duplicate_policy"] not in _DUPLICATE_POLICIES:
        raise ConfigError(
            f"ingest.duplicate_policy must be one of {', '.join(_DUPLICATE_POLICIES)}"
        )
    for key in _NON_NEGATIVE:
        if values[key] < 0:
            raise ConfigError(f"{key} must not be negative, got {values[key]}")
    for key in _POSITIVE:
        if values[key] <= 0:
            raise ConfigError(f"{key} must be greater than 0, got {values[key]}")
    if not 1 <= len(values["dicom.ae_title"].strip()) <= 16:
        raise ConfigError("dicom.ae_title must be 1 to 16 characters")
    return Settings(values, modalities)
