"""Settings: the declared table, TOML and environment, and docs/configuration.md in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vesalius.errors import ConfigError
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
