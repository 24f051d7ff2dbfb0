"""docs/conformance.md lists exactly the SOP classes and transfer syntaxes the server negotiates."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import RunningServer

DOC = Path(__file__).parents[1] / "docs" / "conformance.md"


def _section(title_start: str) -> str:
    text = DOC.read_text()
    start = text.index(title_start)
    end = text.find("\n#", start + 1)
    return text[start:end]


def _uids(section: str) -> set[str]:
    return set(re.findall(r"\| `([0-9.]+)` \|", section))


def test_tables_match_what_the_server_accepts(server: RunningServer) -> None:
    contexts = server.dimse.contexts
    accepted_sops = {str(cx.abstract_syntax) for cx in contexts}
    storage = _uids(_section("#### Storage SOP Classes"))
    others = _uids(_section("#### Verification and Query/Retrieve SOP Classes"))
    assert storage | others == accepted_sops
    assert not storage & others
    syntaxes = _uids(_section("#### Transfer Syntaxes"))
    for cx in contexts:
        assert set(map(str, cx.transfer_syntax)) == syntaxes, cx.abstract_syntax


def test_implementation_version_is_the_one_sent(server: RunningServer) -> None:
    assert f"`{server.dimse.implementation_version_name}`" in _section("### 3.1")
