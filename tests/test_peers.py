"""Remote peers in the index database (issue 12, item 8): ``[modalities]`` seed them, every
node sees the same list, and one added elsewhere (another node, the coming admin UI) is a C-MOVE
destination and a known caller at once, without a restart. On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from pydicom.data import get_testdata_file

from conftest import dcmtk, free_port, make_server
from test_retrieve import start_storescp
from vesalius.index.catalog import Catalog
from vesalius.services.peers import Peer, PeerDirectory
from vesalius.settings import Modality

CT = get_testdata_file("CT_small.dcm")
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


def test_settings_seed_the_table_and_the_table_is_shared(tmp_path: Path, database_url: str) -> None:
    seeded = {
        "ws1": Modality("ws1", "WS1", "127.0.0.1", 104),
        "ws2": Modality("ws2", "WS2", "h", 5),
    }
    running = make_server(tmp_path / "data", database_url, modalities=seeded)
    other_node = Catalog.open(database_url, run_migrations=False)
    try:
        directory = running.archive.peers
        assert {p.name for p in directory.all()} == {"ws1", "ws2"}
        assert directory.by_ae("WS1") == Peer("ws1", "WS1", "127.0.0.1", 104, source="settings")
        # another node adds one: this one sees it at once
        PeerDirectory(other_node).save(Peer("lab", "LAB", "10.0.0.9", 11112))
        assert directory.by_ae("LAB") is not None
        # a start with ws2 gone from the settings removes it, and keeps the one added
        directory.seed({"ws1": seeded["ws1"]})
        assert {p.name for p in directory.all()} == {"ws1", "lab"}
    finally:
        other_node.close()
        running.dimse.stop(grace=1)
        running.archive.close()


def test_a_peer_added_at_run_time_is_a_destination_and_a_known_caller(
    tmp_path: Path, database_url: str
) -> None:
    running = make_server(tmp_path / "data", database_url, **{"dicom.known_callers_only": True})
    port = free_port()
    scp = start_storescp("LATE", port, tmp_path / "received")
    try:
        address = ["-aec", running.ae_title, "127.0.0.1", str(running.port)]
        refused = dcmtk("echoscu", "-aet", "LATE", *address, check=False)
        assert refused.returncode != 0  # not a known caller yet
        running.archive.peers.save(Peer("late", "LATE", "127.0.0.1", port))
        dcmtk("echoscu", "-aet", "LATE", *address)
        dcmtk("storescu", "-aet", "LATE", *address, CT)
        keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={CT_STUDY}"]
        dcmtk("movescu", "-S", "-aet", "LATE", "-aem", "LATE", *address, *keys)
        assert len([p for p in (tmp_path / "received").iterdir() if p.is_file()]) == 1
    finally:
        scp.terminate()
        scp.wait(timeout=10)
        running.dimse.stop(grace=1)
        running.archive.close()
