"""Per-study access labels (issue 14, "Per-study access"): labels set at ingest by rules (the
calling AE, Institution Name) or by an administrator, granted to peers, users and groups, and
enforced by every query and retrieve: DIMSE (C-FIND at every level, C-GET, C-MOVE, from DCMTK's
tools as different known peers), DICOMweb and the viewer's data path (QIDO-RS, WADO-RS
metadata, frames, instances, rendered; WADO-URI) and the service layer. A study one may not see
is absent from results and answers exactly as a study that does not exist. On SQLite and
PostgreSQL.

The archive holds patient LBL-1 with an unlabeled study and a study labeled ``A``, and patient
LBL-2 whose only study is labeled ``B``. Peer SEES_A is granted A, SEES_B B, SEES_ALL both;
STRANGER (an unknown AE title, permitted everything here) is granted nothing.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from conftest import (
    RunningServer,
    dcmtk,
    free_port,
    make_server,
    run_cli,
    running_http,
    wait_until,
)
from find_support import findscu, run_tool
from served import write_config
from synth import make_instance
from test_dicomweb import pattern
from test_retrieve import start_storescp, suboperation_counts
from vesalius.errors import ForbiddenError, NotFoundError, QueryError
from vesalius.identity import Identity
from vesalius.index.catalog import Catalog
from vesalius.index.lookup import RetrieveKeys
from vesalius.services.labels import AccessCache, Grant
from vesalius.services.policy import ARCHIVE, Action, Resource
from vesalius.services.query import Query
from vesalius.services.site_policy import CallerRules, SitePolicy
from vesalius.settings import PEER_PERMISSIONS, Modality

ADMIN = Identity("user", "root", "localhost", roles=frozenset({"admin"}), method="local")
EVERYTHING = frozenset(PEER_PERMISSIONS)


@dataclass
class Labeled:
    running: RunningServer
    url: str
    s0: str  # unlabeled, patient LBL-1
    sa: str  # labeled A (by the calling-AE rule), patient LBL-1
    sb: str  # labeled B (by the Institution Name rule), patient LBL-2
    series: dict[str, str]
    instances: dict[str, list[str]]
    port: int  # where the peers' storescp would listen
    other_node: Catalog

    workdir: Path

    def found(self, aet: str, level: str, keyword: str, *keys: str, model: str = "-S") -> list[str]:
        """The values of ``keyword`` in the matches of a C-FIND by ``aet``."""
        outcome = findscu(
            self.running,
            self.workdir,
            f"QueryRetrieveLevel={level}",
            *keys,
            model=model,
            options=["-aet", aet],
        )
        assert outcome.final == 0x0000, outcome.output
        return [str(value) for value in outcome.values(keyword)]


def _peer(name: str, ae: str, port: int) -> Modality:
    return Modality(name, ae, "127.0.0.1", port, EVERYTHING)


@pytest.fixture
def labeled(tmp_path: Path, database_url: str) -> Iterator[Labeled]:
    port = free_port()
    peers = {
        "granted_a": _peer("granted_a", "SEES_A", port),
        "granted_b": _peer("granted_b", "SEES_B", port),
        "sees_all": _peer("sees_all", "SEES_ALL", port),
    }
    # The HTTP clients here are anonymous, as on the laptop defaults; this site makes them
    # radiologists (auth.anonymous_roles; granted A below), so DICOMweb runs restricted end
    # to end.
    other_node = Catalog.open(database_url)
    policy = SitePolicy(
        AccessCache(other_node, ttl=0),
        CallerRules(unknown_permissions=EVERYTHING),
        anonymous_roles=frozenset({"radiologist"}),
    )
    running = make_server(
        tmp_path / "data",
        database_url,
        peers,
        policy=policy,
        **{"auth.anonymous_roles": "radiologist"},  # the HTTP host's anonymous identity
    )
    labels = running.archive.labels
    labels.add_rule("A", "CallingAETitle", "ONCO*", ADMIN)
    labels.add_rule("B", "InstitutionName", "Clinic B", ADMIN)
    for label, peer in (
        ("A", "granted_a"),
        ("B", "granted_b"),
        ("A", "sees_all"),
        ("B", "sees_all"),
    ):
        labels.grant(Grant(label, "peer", peer), ADMIN)
    labels.grant(Grant("A", "user", "anonymous"), ADMIN)

    studies = {key: generate_uid() for key in ("s0", "sa", "sb")}
    series = {key: generate_uid() for key in studies}
    instances: dict[str, list[str]] = {key: [] for key in studies}
    files: dict[str, list[str]] = {key: [] for key in studies}
    for key, study in studies.items():
        for n in range(2):
            path = tmp_path / f"{key}-{n}.dcm"
            ds = make_instance(
                path,
                rows=16,
                columns=16,
                pixel_data=pattern(16, 16),
                StudyInstanceUID=study,
                SeriesInstanceUID=series[key],
                InstanceNumber=n + 1,
                PatientID="LBL-2" if key == "sb" else "LBL-1",
                PatientName="Two^Patient" if key == "sb" else "One^Patient",
                InstitutionName="Clinic B" if key == "sb" else "Clinic A",
            )
            instances[key].append(str(ds.SOPInstanceUID))
            files[key].append(str(path))
    address = ["-aec", running.ae_title, "127.0.0.1", str(running.port)]
    dcmtk("storescu", "-aet", "MODALITY", *address, *files["s0"], *files["sb"])
    dcmtk("storescu", "-aet", "ONCO_CT", *address, *files["sa"])
    try:
        with running_http(running.archive, running.settings) as url:
            yield Labeled(
                running, url, *studies.values(), series, instances, port, other_node, tmp_path
            )
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()
        other_node.close()


def test_rules_label_studies_at_ingest(labeled: Labeled) -> None:
    listed = dict(labeled.running.archive.labels.of_studies(ADMIN))
    assert listed == {labeled.sa: "A", labeled.sb: "B"}


# --- DIMSE -------------------------------------------------------------------------------


def test_c_find_at_every_level_shows_only_what_the_peer_may_see(labeled: Labeled) -> None:
    every = {labeled.s0, labeled.sa, labeled.sb}
    study = ("STUDY", "StudyInstanceUID", "StudyInstanceUID=")
    assert set(labeled.found("SEES_A", *study)) == {labeled.s0, labeled.sa}
    assert set(labeled.found("SEES_B", *study)) == {labeled.s0, labeled.sb}
    assert set(labeled.found("SEES_ALL", *study)) == every
    assert set(labeled.found("STRANGER", *study)) == {labeled.s0}

    # PATIENT level (Patient Root): a patient whose only study is invisible is absent, and the
    # related counts are over the visible studies only
    patient = ("PATIENT", "PatientID", "PatientID=", "NumberOfPatientRelatedStudies=")
    assert labeled.found("SEES_A", *patient, model="-P") == ["LBL-1"]
    assert sorted(labeled.found("SEES_B", *patient, model="-P")) == ["LBL-1", "LBL-2"]
    assert labeled.found("STRANGER", *patient, model="-P") == ["LBL-1"]
    counts = labeled.found(
        "SEES_B",
        "PATIENT",
        "NumberOfPatientRelatedStudies",
        "PatientID=LBL-1",
        "NumberOfPatientRelatedStudies=",
        model="-P",
    )
    assert counts == ["1"]
    counts = labeled.found(
        "SEES_ALL",
        "PATIENT",
        "NumberOfPatientRelatedStudies",
        "PatientID=LBL-1",
        "NumberOfPatientRelatedStudies=",
        model="-P",
    )
    assert counts == ["2"]

    # SERIES and IMAGE levels, naming the invisible study: nothing, as for an unknown one
    for aet, expected in (("SEES_A", []), ("SEES_B", [labeled.series["sb"]])):
        got = labeled.found(
            aet,
            "SERIES",
            "SeriesInstanceUID",
            f"StudyInstanceUID={labeled.sb}",
            "SeriesInstanceUID=",
        )
        assert got == expected
    images = labeled.found(
        "SEES_A",
        "IMAGE",
        "SOPInstanceUID",
        f"StudyInstanceUID={labeled.sb}",
        f"SeriesInstanceUID={labeled.series['sb']}",
        "SOPInstanceUID=",
    )
    assert images == []
    images = labeled.found(
        "SEES_B",
        "IMAGE",
        "SOPInstanceUID",
        f"StudyInstanceUID={labeled.sb}",
        f"SeriesInstanceUID={labeled.series['sb']}",
        "SOPInstanceUID=",
    )
    assert sorted(images) == sorted(labeled.instances["sb"])
    # relational-free wildcard query at IMAGE level through Patient Root as well
    images = labeled.found(
        "SEES_A",
        "IMAGE",
        "SOPInstanceUID",
        "PatientID=LBL-2",
        f"StudyInstanceUID={labeled.sb}",
        f"SeriesInstanceUID={labeled.series['sb']}",
        "SOPInstanceUID=",
        model="-P",
    )
    assert images == []


def _getscu(
    labeled: Labeled, aet: str, study: str, folder: Path
) -> tuple[int, str, dict[str, int]]:
    folder.mkdir(parents=True, exist_ok=True)
    _code, output = run_tool(
        "getscu",
        "-d",
        "-S",
        "-aet",
        aet,
        "-aec",
        labeled.running.ae_title,
        "-od",
        str(folder),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study}",
        "127.0.0.1",
        str(labeled.running.port),
    )
    statuses = re.findall(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", output)
    return int(statuses[-1], 16), output, suboperation_counts(output)


def test_c_get_of_an_invisible_study_answers_as_for_an_unknown_one(
    labeled: Labeled, tmp_path: Path
) -> None:
    hidden = _getscu(labeled, "SEES_A", labeled.sb, tmp_path / "hidden")
    unknown = _getscu(labeled, "SEES_A", generate_uid(), tmp_path / "unknown")
    assert (hidden[0], hidden[2]) == (unknown[0], unknown[2])
    assert hidden[0] == 0x0000 and hidden[2].get("completed", 0) == 0
    assert not list((tmp_path / "hidden").iterdir())
    seen = _getscu(labeled, "SEES_B", labeled.sb, tmp_path / "seen")
    assert seen[0] == 0x0000 and seen[2]["completed"] == 2, seen[1]
    assert len(list((tmp_path / "seen").iterdir())) == 2


def test_c_move_of_an_invisible_study_moves_nothing(labeled: Labeled, tmp_path: Path) -> None:
    scp = start_storescp("SEES_A", labeled.port, tmp_path / "moved")
    try:

        def move(study: str) -> tuple[int, dict[str, int]]:
            _code, output = run_tool(
                "movescu",
                "-d",
                "-S",
                "-aet",
                "SEES_A",
                "-aem",
                "SEES_A",
                "-aec",
                labeled.running.ae_title,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study}",
                "127.0.0.1",
                str(labeled.running.port),
            )
            statuses = re.findall(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", output)
            return int(statuses[-1], 16), suboperation_counts(output)

        assert move(labeled.sb) == move(generate_uid())
        assert move(labeled.sb)[0] == 0x0000
        assert not list((tmp_path / "moved").iterdir())
        assert move(labeled.sa)[0] == 0x0000
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    assert len([p for p in (tmp_path / "moved").iterdir() if p.is_file()]) == 2


# --- DICOMweb and the viewer's data path ---------------------------------------------------


def _uids(response: httpx.Response, tag: str) -> set[str]:
    assert response.status_code in (200, 204), response.text
    if response.status_code == 204 or not response.content:
        return set()
    return {item[tag]["Value"][0] for item in response.json()}


def test_qido_rs_shows_only_the_granted_studies(labeled: Labeled) -> None:
    base = labeled.url + "/dicom-web"
    # what OHIF's study list asks
    studies = httpx.get(f"{base}/studies", params={"includefield": "all", "limit": "101"})
    assert _uids(studies, "0020000D") == {labeled.s0, labeled.sa}
    by_patient = httpx.get(f"{base}/studies", params={"PatientID": "LBL-2"})
    assert _uids(by_patient, "0020000D") == set()
    hidden = httpx.get(f"{base}/studies/{labeled.sb}/series")
    unknown = httpx.get(f"{base}/studies/{generate_uid()}/series")
    assert hidden.status_code == unknown.status_code
    assert _uids(hidden, "0020000E") == set()
    assert _uids(httpx.get(f"{base}/studies/{labeled.sa}/series"), "0020000E") == {
        labeled.series["sa"]
    }
    everything = httpx.get(f"{base}/instances")
    assert _uids(everything, "00080018") == set(labeled.instances["s0"] + labeled.instances["sa"])
    series = httpx.get(f"{base}/series", params={"StudyInstanceUID": labeled.sb})
    assert _uids(series, "0020000E") == set()


def _paths(labeled: Labeled, key: str, study: str | None = None) -> list[str]:
    study = study or getattr(labeled, key)
    series, sop = labeled.series[key], labeled.instances[key][0]
    instance = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"
    return [
        f"/dicom-web/studies/{study}",
        f"/dicom-web/studies/{study}/metadata",
        f"/dicom-web/studies/{study}/series/{series}",
        f"/dicom-web/studies/{study}/series/{series}/metadata",
        f"/dicom-web/studies/{study}/series/{series}/rendered",
        f"/dicom-web/studies/{study}/thumbnail",
        instance,
        instance + "/metadata",
        instance + "/frames/1",
        instance + "/rendered",
        instance + "/thumbnail",
        f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
        "&contentType=application/dicom",
    ]


def test_wado_of_an_invisible_study_is_404_as_for_one_that_does_not_exist(
    labeled: Labeled,
) -> None:
    accept = {"Accept": "*/*"}
    with httpx.Client(base_url=labeled.url, headers=accept, timeout=30) as client:
        for path in _paths(labeled, "sa"):
            assert client.get(path).status_code == 200, path
        for path in _paths(labeled, "sb"):
            hidden = client.get(path)
            assert hidden.status_code == 404, (path, hidden.status_code)
        # the same request for a study that does not exist: the same answer
        ghost = _paths(labeled, "sb", study=generate_uid())
        for hidden_path, ghost_path in zip(_paths(labeled, "sb"), ghost, strict=True):
            assert client.get(ghost_path).status_code == client.get(hidden_path).status_code


# --- the service layer: users, groups, administrators ---------------------------------------


def test_users_see_by_their_grants_and_groups_and_admins_see_all(labeled: Labeled) -> None:
    archive = labeled.running.archive
    query = Query("STUDY", filters={"StudyInstanceUID": ""})

    def studies(who: Identity) -> set[str]:
        return {r["StudyInstanceUID"] for r in archive.query.find(query, who)}

    radiologist = Identity("user", "rad", roles=frozenset({"radiologist"}), method="session")
    in_group = Identity(
        "user",
        "rad2",
        roles=frozenset({"radiologist"}),
        groups=frozenset({"radiology-b"}),
        method="oidc",
    )
    assert studies(radiologist) == {labeled.s0}
    archive.labels.grant(Grant("B", "group", "radiology-b"), ADMIN)
    assert studies(in_group) == {labeled.s0, labeled.sb}  # applies at once
    archive.labels.add(labeled.sa, ["B"], ADMIN)  # A and B: one granted label is enough
    assert studies(in_group) == {labeled.s0, labeled.sa, labeled.sb}
    assert studies(radiologist) == {labeled.s0}
    assert studies(ADMIN) == {labeled.s0, labeled.sa, labeled.sb}
    assert studies(Identity.system()) == {labeled.s0, labeled.sa, labeled.sb}
    researcher = Identity("user", "res", roles=frozenset({"researcher"}), method="token")
    with pytest.raises(ForbiddenError, match="may not query"):
        archive.query.find(query, researcher)

    keys = RetrieveKeys("STUDY", study_uids=(labeled.sb,))
    with pytest.raises(NotFoundError):
        archive.metadata.documents(keys, radiologist)
    assert len(archive.metadata.documents(keys, in_group)) == 2
    assert archive.retrieve.plan(keys, radiologist, "WADO-RS").instances == []
    # a revoke applies at once in this process
    archive.labels.revoke(Grant("B", "group", "radiology-b"), ADMIN)
    assert studies(in_group) == {labeled.s0}


def test_a_study_whose_last_label_is_removed_is_visible_again(labeled: Labeled) -> None:
    """``studies.labeled`` follows the label writes: the filter tests it before any probe."""
    archive = labeled.running.archive
    query = Query("STUDY", filters={"StudyInstanceUID": ""})
    radiologist = Identity("user", "rad", roles=frozenset({"radiologist"}), method="session")

    def studies() -> set[str]:
        return {r["StudyInstanceUID"] for r in archive.query.find(query, radiologist)}

    assert studies() == {labeled.s0}
    archive.labels.grant(Grant("a", "user", "rad"), ADMIN)  # labels are told apart by case
    assert studies() == {labeled.s0}
    assert archive.labels.add(labeled.sb, ["C"], ADMIN) == 1
    assert archive.labels.add(labeled.sb, ["C"], ADMIN) == 0  # had it
    assert archive.labels.remove(labeled.sb, ["B"], ADMIN) == 1
    assert studies() == {labeled.s0}  # C is left
    assert archive.labels.remove(labeled.sb, ["C", "D"], ADMIN) == 1
    assert studies() == {labeled.s0, labeled.sb}
    archive.labels.add(labeled.s0, ["A"], ADMIN)
    assert studies() == {labeled.sb}


class _DeletingReader(SitePolicy):
    """A site where radiologists may also delete: what they delete is what they see."""

    def check(self, who: Identity, action: Action, resource: Resource = ARCHIVE) -> None:
        if action == "delete" and who.kind == "user":
            return
        super().check(who, action, resource)


def test_deleting_an_invisible_study_is_not_found(labeled: Labeled) -> None:
    from vesalius.services.deletion import DeleteService
    from vesalius.services.jobs import JobService
    from vesalius.services.oversight import Oversight

    archive = labeled.running.archive
    assembly = labeled.running.assembly
    policy = _DeletingReader(AccessCache(assembly.catalog, ttl=0))
    oversight = Oversight(policy, archive.oversight.events)
    jobs = JobService(assembly.catalog, oversight=oversight)
    deleting = DeleteService(assembly.catalog, assembly.stores, oversight=oversight, jobs=jobs)
    reader = Identity("user", "anonymous", roles=frozenset({"radiologist"}), method="session")
    keys = RetrieveKeys("STUDY", study_uids=(labeled.sb,))
    with pytest.raises(NotFoundError):
        deleting.delete(keys, reader)
    assert {
        r["StudyInstanceUID"]
        for r in archive.query.find(Query("STUDY", filters={"StudyInstanceUID": labeled.sb}), ADMIN)
    } == {labeled.sb}
    deleting.delete(RetrieveKeys("STUDY", study_uids=(labeled.sa,)), reader)  # granted A
    remaining = {r["StudyInstanceUID"] for r in archive.query.find(Query("STUDY"), ADMIN)}
    assert remaining == {labeled.s0, labeled.sb}
    assert dict(archive.labels.of_studies(ADMIN)) == {labeled.sb: "B"}  # gone with its study


# --- the commands ------------------------------------------------------------------------


def test_label_and_peer_commands(tmp_path: Path, database_url: str) -> None:
    """``vesalius label`` and ``vesalius peer`` on the index a running server uses: the
    server applies the change within labels.cache_seconds."""
    config = tmp_path / "vesalius.toml"
    write_config(config, {"data_dir": str(tmp_path / "data"), "database_url": database_url})
    running = make_server(
        tmp_path / "data",
        database_url,
        **{"labels.cache_seconds": 0.2, "dicom.unknown_caller_permissions": "echo"},
    )

    def vesalius(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        outcome = run_cli(*args, "--config", str(config))
        assert (outcome.returncode == 0) == ok, outcome.stdout + outcome.stderr
        return outcome

    try:
        path = tmp_path / "one.dcm"
        study = str(make_instance(path, PatientID="CLI-1").StudyInstanceUID)
        running.archive.ingest.ingest_copy(path, Identity.system())
        vesalius("peer", "set", "ws", f"WS@127.0.0.1:{free_port()}", "--permissions", "echo,find")
        assert "ws WS@127.0.0.1" in vesalius("peer", "list").stdout
        vesalius("peer", "set", "ws", "--permissions", "echo,fly", ok=False)

        def sees(study_uid: str) -> bool:
            outcome = run_tool(
                "findscu",
                "-S",
                "-aet",
                "WS",
                "-aec",
                running.ae_title,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study_uid}",
                "127.0.0.1",
                str(running.port),
                "-d",
            )
            return study_uid in outcome[1] and "Pending" in outcome[1]

        wait_until(lambda: sees(study), what="the peer added by the command to be known")
        vesalius("label", "add", study, "secret")
        assert vesalius("label", "list", "--study", study).stdout.split() == ["secret"]
        wait_until(lambda: not sees(study), what="the labeled study to vanish for WS")
        vesalius("label", "grant", "secret", "--peer", "ws")
        wait_until(lambda: sees(study), what="the grant to apply")
        listing = vesalius("label", "list").stdout
        assert "label secret: 1" in listing and "grant secret to peer ws" in listing
        vesalius("label", "grant", "secret", "--peer", "nobody", ok=False)
        vesalius("label", "revoke", "secret", "--peer", "ws")
        wait_until(lambda: not sees(study), what="the revoke to apply")
        vesalius("label", "rule", "secret", "--institution", "Clinic*")
        assert "InstitutionName = Clinic* -> secret" in vesalius("label", "list").stdout
        vesalius("label", "add", generate_uid(), "x", ok=False)  # no such study
        vesalius("label", "add", study, "bad label", ok=False)
        vesalius("peer", "remove", "ws")
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()


def test_a_rule_on_any_tag_labels_at_ingest(tmp_path: Path, database_url: str) -> None:
    """A rule on an attribute the index does not keep (Protocol Name) reads it from the
    instance's DICOM JSON; studies stored before the rule keep their labels."""
    running = make_server(tmp_path / "data", database_url)
    try:
        archive = running.archive
        before = tmp_path / "before.dcm"
        early = str(make_instance(before, ProtocolName="TRIAL-42 arm A").StudyInstanceUID)
        archive.ingest.ingest_copy(before, Identity.system())
        rule = archive.labels.add_rule("trial-42", "ProtocolName", "TRIAL-42*", ADMIN)
        paths = [tmp_path / f"{n}.dcm" for n in range(2)]
        trial = str(make_instance(paths[0], ProtocolName="TRIAL-42 arm B").StudyInstanceUID)
        other = str(make_instance(paths[1], ProtocolName="ROUTINE").StudyInstanceUID)
        for path in paths:
            archive.ingest.ingest_copy(path, Identity.system())
        assert archive.labels.of_studies(ADMIN) == [(trial, "trial-42")]
        assert early != trial and other != trial
        with pytest.raises(QueryError, match="not a DICOM keyword"):
            archive.labels.add_rule("x", "NoSuchKeyword", "*", ADMIN)
        assert archive.labels.remove_rule(rule, ADMIN)
        with pytest.raises(ForbiddenError):
            archive.labels.add_rule(
                "x",
                "ProtocolName",
                "*",
                Identity("user", "rad", roles=frozenset({"radiologist"}), method="session"),
            )
    finally:
        running.dimse.stop(grace=1)
        running.archive.close()
