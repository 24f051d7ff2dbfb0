"""Settings: the declared table, TOML and environment, and docs/configuration.md in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vesalius.errors import ConfigError, ConfigFileError
from vesalius.settings import SETTINGS, load_settings

DOC = Path(__file__).parents[1] / "docs" / "configuration.md"


def test_docs_list_every_setting_and_nothing_else() -> None:
    rows = re.findall(
        r"^\| `([a-z_.]+)` \| (\w+) \| `([^`]*)` \| `(VESALIUS_\w+)` \|", DOC.read_text(), re.M
    )
    documented = {key: (typ, default, env) for key, typ, default, env in rows}
    declared = {s.key for s in SETTINGS}
    assert set(documented) == declared
    for s in SETTINGS:
        typ, default, env = documented[s.key]
        assert typ == s.type.__name__, s.key
        assert env == s.env_var, s.key
        expected = (
            ("true" if s.default else "false")
            if isinstance(s.default, bool)
            else (f'"{s.default}"' if isinstance(s.default, str) else str(s.default))
        )
        assert default == expected, s.key


def test_defaults() -> None:
    s = load_settings(environ={})
    assert s["dicom.ae_title"] == "VESALIUS"
    assert s["dicom.port"] == 11112
    assert s["http.port"] == 8080
    assert s.database_url.startswith("sqlite:///")
    assert s.database_url.endswith("vesalius-data/index.sqlite")


def test_toml_then_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "v.toml"
    cfg.write_text(
        'data_dir = "/srv/pacs"\n'
        '[dicom]\nae_title = "ARCHIVE"\nport = 104\n'
        "[http]\nport = 9000\n"
        '[modalities.WS1]\nae_title = "WS1"\nhost = "10.0.0.5"\nport = 11113\n'
    )
    s = load_settings(
        cfg, environ={"VESALIUS_DICOM_PORT": "4242", "VESALIUS_MODALITY_CT1": "CT1@ct:104"}
    )
    assert s["dicom.ae_title"] == "ARCHIVE"
    assert s["dicom.port"] == 4242
    assert s["http.port"] == 9000
    assert s.data_dir == Path("/srv/pacs")
    assert s.modalities["WS1"].port == 11113
    assert s.resolve_peer("CT1").host == "ct"
    assert s.resolve_peer("WS1").ae_title == "WS1"
    assert s.resolve_peer("X@127.0.0.1:5").port == 5


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ('[dicom]\nport = "eleven"\n', {}),
        ("nonsense = 1\n", {}),
        ("[dicom\n", {}),
        ("", {"VESALIUS_STORAGE_FSYNC": "maybe"}),
        ('[ingest]\nduplicate_policy = "merge"\n', {}),
        ('[modalities.X]\nhost = "h"\n', {}),
    ],
)
def test_bad_settings_are_refused_clearly(tmp_path: Path, text: str, env: dict[str, str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError):
        load_settings(cfg, environ=env)


def test_every_problem_is_collected_one_line_each(tmp_path: Path) -> None:
    cfg = tmp_path / "v.toml"
    cfg.write_text(
        '[dicom]\nport = 70000\nprot = 1\nworkers = -1\n[http]\nport = "x"\n'
        '[ingest]\nduplicate_policy = "merge"\n'
    )
    env = {"VESALIUS_LOG_LEVEL": "loud", "VESALIUS_HTTP_HOTS": "::", "VESALIUS_MODALITY_X": "bad"}
    with pytest.raises(ConfigError) as caught:
        load_settings(cfg, environ=env)
    problems = caught.value.problems
    assert len(problems) == 8, problems
    assert all("\n" not in p for p in problems)
    text = "\n".join(problems)
    for needle in (
        f"{cfg}: dicom.port is 70000: a TCP port is 1 to 65535",
        f"{cfg}: unknown setting 'dicom.prot' (did you mean dicom.port?)",
        f"{cfg}: dicom.workers must not be negative",
        f"{cfg}: http.port must be an integer, got 'x'",
        f"{cfg}: ingest.duplicate_policy must be one of replace, keep, reject, got 'merge'",
        "environment variable VESALIUS_LOG_LEVEL must be one of debug, info, warning, error, "
        "critical, got 'loud'",
        "VESALIUS_HTTP_HOTS is not a Vesalius setting (did you mean VESALIUS_HTTP_HOST?)",
        "environment variable VESALIUS_MODALITY_X: expected AET@HOST:PORT",
    ):
        assert needle in text, text


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("", True),
        ("sqlite:///x.db", True),
        ("postgresql://u@h/db", True),
        ("postgresql+psycopg://u@h/db", True),
        ("postgres://u@h/db", True),
        ("mysql://u:p@h/db", False),
        ("mysql+pymysql://u:p@h/db", False),
        ("postgresql+psycopg2://u@h/db", False),
        ("oracle://u@h/db", False),
        ("just words", False),
    ],
)
def test_database_urls_other_than_sqlite_and_postgresql_are_refused(url: str, ok: bool) -> None:
    env = {"VESALIUS_DATABASE_URL": url}
    if ok:
        load_settings(environ=env)
        return
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env)
    assert "VESALIUS_DATABASE_URL" in caught.value.message
    assert ":p@" not in caught.value.message


def test_variables_vesalius_reads_are_known() -> None:
    env = {
        "VESALIUS_CONFIG_IGNORED_BY_LOAD": "",
        "VESALIUS_REQUIRE_POSTGRES": "1",
        "VESALIUS_DEBUG": "1",
        "VESALIUS_TEST_PG": "postgresql://x",
        "VESALIUS_BENCH_PG": "1",
        "VESALIUS_MODALITY_CT": "CT@ct:104",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env)
    assert caught.value.problems == (
        "environment variable VESALIUS_CONFIG_IGNORED_BY_LOAD is not a Vesalius setting "
        "(did you mean VESALIUS_CONFIG?): rename or unset it",
    )
    del env["VESALIUS_CONFIG_IGNORED_BY_LOAD"]
    assert load_settings(environ=env).modalities["CT"].host == "ct"


def test_the_same_port_on_overlapping_addresses() -> None:
    same = {"VESALIUS_DICOM_PORT": "9000", "VESALIUS_HTTP_PORT": "9000"}
    with pytest.raises(ConfigError, match="both 9000 on overlapping addresses"):
        load_settings(environ=same)  # dicom.host 0.0.0.0 covers http.host 127.0.0.1
    apart = {**same, "VESALIUS_DICOM_HOST": "127.0.0.2"}
    assert load_settings(environ=apart)["http.port"] == 9000
    assert load_settings(environ={}, overrides={"dicom.port": 0, "http.port": 0})


def test_choices_are_case_insensitive() -> None:
    assert load_settings(environ={"VESALIUS_LOG_LEVEL": "DEBUG"})["log_level"] == "debug"


def test_toml_types_are_strict(tmp_path: Path) -> None:
    cfg = tmp_path / "v.toml"
    for text in ('[dicom]\nport = "104"\n', "[dicom]\nport = 104.5\n", "data_dir = 5\n"):
        cfg.write_text(text)
        with pytest.raises(ConfigError, match="must be"):
            load_settings(cfg, environ={})


def test_relative_paths_follow_the_file_that_names_them(tmp_path: Path) -> None:
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    site.mkdir()
    cfg = site / "v.toml"
    cfg.write_text(
        'data_dir = "archive"\ndatabase_url = "sqlite:///db/index.sqlite"\n'
        '[viewer]\ndir = "../ohif"\n'
    )
    s = load_settings(cfg, environ={}, cwd=elsewhere)
    assert s.data_dir == site / "archive"
    assert s.database_url == f"sqlite:///{site / 'db' / 'index.sqlite'}"
    assert s["viewer.dir"] == str(tmp_path / "ohif")
    assert s.origin("data_dir") == f"set in {cfg}"
    # from the environment or the command line: against the current folder
    s = load_settings(cfg, environ={"VESALIUS_DATA_DIR": "here"}, cwd=elsewhere)
    assert s.data_dir == elsewhere / "here"
    assert s.origin("data_dir") == "set by VESALIUS_DATA_DIR"
    s = load_settings(environ={}, overrides={"data_dir": "x"}, cwd=elsewhere)
    assert s.data_dir == elsewhere / "x" and s.origin("data_dir") == "set on the command line"
    assert load_settings(environ={}, cwd=elsewhere).data_dir == elsewhere / "vesalius-data"
    assert load_settings(environ={}, cwd=elsewhere)["viewer.dir"] == ""


def test_a_missing_file_is_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as caught:
        load_settings(tmp_path / "none.toml", environ={})
    assert caught.value.exit_status == 66


def test_bad_toml_says_where(tmp_path: Path) -> None:
    cfg = tmp_path / "v.toml"
    cfg.write_text('data_dir = "x"\n\n[http\n')
    with pytest.raises(ConfigError, match=r"line 3, column \d+"):
        load_settings(cfg, environ={})
