"""The OHIF viewer: static serving, SPA fallback, app-config.js, and `vesalius viewer install`
against a fake npm registry (a local http.server with a small tarball: the real 50 MB download
runs in scripts/test, and tests/test_viewer_browser.py uses it)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import logging
import re
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner

from conftest import running_http
from vesalius.cli import main
from vesalius.settings import load_settings
from vesalius.wiring import assemble, viewer_dir

BUNDLE = "app.bundle.0f6159c501addfe9.js"
INDEX = b"<!doctype html><title>OHIF Viewer</title><div id=root></div>"


def fake_dist(folder: Path) -> Path:
    """A miniature OHIF build with the shapes of the real one."""
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_bytes(INDEX)
    (folder / BUNDLE).write_text("console.log('ohif');\n")
    (folder / "app.bundle.css").write_text("body{}\n")
    (folder / "0ddf166f7a343eda.wasm").write_bytes(b"\0asm\1\0\0\0")
    (folder / "app-config.js").write_text("window.config = {shipped: true};\n")
    (folder / "assets" / "favicon-16x16.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return folder


@contextmanager
def serving(tmp_path: Path, **overrides: object) -> Iterator[str]:
    """Vesalius's HTTP side over a fresh archive with these settings; yields its base URL."""
    settings = load_settings(
        environ={},
        overrides={
            "data_dir": str(tmp_path / "data"),
            "storage.min_free_mb": 0,
            **overrides,
        },
    )
    archive = assemble(settings).archive
    try:
        with running_http(archive, settings) as url:
            yield url
    finally:
        archive.close()


@pytest.fixture
def viewer_url(tmp_path: Path) -> Iterator[str]:
    """The fake build served, with a secret beside it and a symbolic link to the secret in it."""
    (tmp_path / "secret.txt").write_text("SECRET")
    dist = fake_dist(tmp_path / "ohif")
    (dist / "link.txt").symlink_to(tmp_path / "secret.txt")
    with serving(tmp_path, **{"viewer.dir": str(dist)}) as url:
        yield url


def raw_get(url: str, path: str, accept: str = "*/*") -> tuple[int, bytes]:
    """GET ``path`` exactly as written (httpx would normalise ``..`` away)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Accept": accept})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_static_files_have_types_and_cache_headers(viewer_url: str) -> None:
    with httpx.Client(base_url=viewer_url) as client:
        bundle = client.get("/" + BUNDLE)
        assert bundle.status_code == 200
        assert bundle.text == "console.log('ohif');\n"
        assert bundle.headers["content-type"].startswith("text/javascript")
        assert bundle.headers["cache-control"] == "public, max-age=31536000, immutable"
        wasm = client.get("/0ddf166f7a343eda.wasm")
        assert wasm.headers["content-type"] == "application/wasm"
        assert "immutable" in wasm.headers["cache-control"]
        css = client.get("/app.bundle.css")  # not content-hashed: revalidated
        assert css.headers["content-type"].startswith("text/css")
        assert css.headers["cache-control"] == "no-cache"
        icon = client.get("/assets/favicon-16x16.png")
        assert icon.headers["content-type"] == "image/png"
        again = client.get("/app.bundle.css", headers={"If-None-Match": css.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""
        head = client.head("/" + BUNDLE)
        assert head.status_code == 200
        assert head.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/viewer?StudyInstanceUIDs=1.2.840.113619.2.55.3",
        "/viewer/dicomweb?StudyInstanceUIDs=1.2.3",
        "/viewer/1.2.840.113619.2.55.3",
        "/local",
        "/datasources",
    ],
)
def test_viewer_routes_answer_index_html(viewer_url: str, path: str) -> None:
    response = httpx.get(viewer_url + path)
    assert response.status_code == 200
    assert response.content == INDEX
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"


def test_the_root_is_the_web_ui_not_ohifs_study_list(viewer_url: str) -> None:
    """Issue 15: ``/`` is Vesalius's own study list; OHIF keeps ``/viewer``."""
    response = httpx.get(viewer_url + "/")
    assert response.status_code == 200
    assert response.content != INDEX
    assert b"/ui/static/app.js" in response.content


def test_navigation_to_a_dotted_path_gets_the_page_but_a_script_does_not(viewer_url: str) -> None:
    assert httpx.get(viewer_url + "/viewer/x.html", headers={"Accept": "text/html"}).content == (
        INDEX
    )
    assert httpx.get(viewer_url + "/missing.js", headers={"Accept": "*/*"}).status_code == 404
    assert httpx.get(
        viewer_url + "/assets/missing", headers={"Accept": "text/html"}
    ).status_code == (404)


def test_app_config_points_at_this_servers_dicomweb(viewer_url: str) -> None:
    response = httpx.get(viewer_url + "/app-config.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "no-cache"
    assert "shipped" not in response.text  # ours, not the build's
    match = re.search(r"window\.config = (\{.*?\n\});", response.text, re.S)
    assert match, response.text
    config = json.loads(match[1])
    assert config["showStudyList"] is True
    (source,) = config["dataSources"]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    assert config["defaultDataSourceName"] == source["sourceName"]
    c = source["configuration"]
    assert (c["qidoRoot"], c["wadoRoot"], c["wadoUriRoot"]) == ("/dicom-web", "/dicom-web", "/wado")
    assert c["qidoSupportsIncludeField"] is True
    assert c["imageRendering"] == c["thumbnailRendering"] == "wadors"
    assert c["bulkDataURI"] == {"enabled": True, "relativeResolution": "studies"}
    assert "window.location.origin" in response.text  # made absolute in the browser


@pytest.mark.parametrize(
    "path",
    [
        "/..%2f..%2fetc/passwd",
        "/assets/../../x",
        "/assets/../../secret.txt",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/..\\secret.txt",
        "/link.txt",
        "/assets/missing.png",
    ],
)
def test_traversal_and_missing_files_are_404(viewer_url: str, path: str) -> None:
    accepts = ["*/*"] if path == "/link.txt" else ["*/*", "text/html"]  # navigation: the page
    for accept in accepts:
        status, body = raw_get(viewer_url, path, accept)
        assert status == 404, accept
        assert b"SECRET" not in body
        assert body != INDEX


def test_other_front_doors_paths_are_never_the_viewer(viewer_url: str) -> None:
    for path in ("/api/nothing", "/ui/nothing", "/dicom-web/nothing/here", "/health/x"):
        response = httpx.get(viewer_url + path, headers={"Accept": "text/html"})
        assert response.status_code >= 400, path
        assert response.content != INDEX, path
    assert httpx.post(viewer_url + "/viewer").status_code == 405


@pytest.mark.parametrize(
    "path",
    ["/foo.php", "/foo", "/wp-login.php", "/.env", "/admin/", "/viewerx", "/studies", "/ohif"],
)
def test_paths_outside_the_viewers_routes_are_404(viewer_url: str, path: str) -> None:
    for accept in ("*/*", "text/html"):
        response = httpx.get(viewer_url + path, headers={"Accept": accept})
        assert response.status_code == 404, (path, accept)
        assert response.content != INDEX


def test_unknown_api_paths_are_404_in_json(viewer_url: str) -> None:
    for path in ("/api/x", "/dicom-web/nothing/here", "/wado/x", "/metrics/x", "/readyz/x"):
        response = httpx.get(viewer_url + path, headers={"Accept": "text/html"})
        assert response.status_code == 404, path
        json_type = "application/problem+json" if path.startswith("/api") else "application/json"
        assert response.headers["content-type"] == json_type, path
        assert response.json()["status"] == 404


def test_every_mode_of_the_installed_build_is_a_viewer_route() -> None:
    """PAGES lists OHIF's routes by hand: a new mode in a newer build must be added there."""
    from vesalius.viewer.app import PAGES

    build = viewer_dir(load_settings(environ={}, overrides={}))
    bundles = sorted(build.glob("*.js"))
    if not bundles:
        pytest.skip(f"no OHIF build installed in {build} (`vesalius viewer install`)")
    names = set()
    for bundle in bundles:
        names.update(re.findall(r"routeName: ?['\"]([A-Za-z0-9_-]+)['\"]", bundle.read_text()))
    assert names, "no routeName found: has the build's shape changed?"
    assert names <= PAGES, names - PAGES


def test_not_installed_says_how_to_install(tmp_path: Path) -> None:
    with serving(tmp_path, **{"viewer.dir": str(tmp_path / "empty")}) as url:
        text = httpx.get(url + "/viewer?StudyInstanceUIDs=1.2.3")
        assert text.status_code == 503
        assert "vesalius viewer install" in text.text
        assert str(tmp_path / "empty" / "3.13.2") in text.text
        page = httpx.get(url + "/viewer", headers={"Accept": "text/html"})
        assert page.status_code == 503
        assert page.headers["content-type"].startswith("text/html")
        assert "vesalius viewer install" in page.text
        assert httpx.get(url + "/health").status_code == 200


def test_disabled_viewer_serves_nothing(tmp_path: Path) -> None:
    overrides = {"viewer.dir": str(fake_dist(tmp_path / "ohif")), "viewer.enabled": False}
    with serving(tmp_path, **overrides) as url:
        assert httpx.get(url + "/viewer").status_code == 404
        assert httpx.get(url + "/" + BUNDLE).status_code == 404


def test_viewer_dir_layout(tmp_path: Path) -> None:
    settings = load_settings(environ={"VESALIUS_VIEWER_DIR": str(tmp_path)})
    assert viewer_dir(settings) == tmp_path / "3.13.2"  # versions side by side
    fake_dist(tmp_path / "build")
    custom = load_settings(environ={"VESALIUS_VIEWER_DIR": str(tmp_path / "build")})
    assert viewer_dir(custom) == tmp_path / "build"  # a build of one's own, served as is
    default = load_settings(environ={})
    assert viewer_dir(default).parts[-4:] == ("share", "vesalius", "ohif", "3.13.2")


# --- vesalius viewer install, against a fake npm registry ---------------------------------


def tarball(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A gzipped npm-style tarball of ``members`` (and symbolic ``links``)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


GOOD = tarball(
    {
        "package/package.json": b'{"name": "@ohif/app"}',
        "package/dist/index.html": INDEX,
        "package/dist/" + BUNDLE: b"console.log('ohif');",
        "package/dist/assets/favicon-16x16.png": b"\x89PNG",
    }
)


class Registry:
    """A fake npm registry: ``files`` maps URL paths to bodies."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.requests.append(self.path)
                body = registry.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def publish(self, version: str, served: bytes, declared: bytes | None = None) -> None:
        """Publish ``version``: the registry serves ``served`` and declares the integrity of
        ``declared`` (default: the same bytes)."""
        path = f"/@ohif/app/-/app-{version}.tgz"
        self.files[path] = served
        metadata = {
            "name": "@ohif/app",
            "dist-tags": {"latest": version},
            "versions": {
                version: {
                    "version": version,
                    "dist": {
                        "tarball": self.url + path,
                        "integrity": integrity(declared if declared is not None else served),
                    },
                }
            },
        }
        self.files["/@ohif%2fapp"] = json.dumps(metadata).encode()


@pytest.fixture
def registry() -> Iterator[Registry]:
    fake = Registry()
    thread = threading.Thread(target=fake.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.httpd.shutdown()
        fake.httpd.server_close()


def run_install(registry: Registry, folder: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main,
        ["viewer", "install", "--dir", str(folder), *args],
        env={"VESALIUS_VIEWER_NPM_REGISTRY": registry.url, "VESALIUS_CONFIG": None},
    )
    return result.exit_code, result.output


def installed_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_install_unpacks_dist_once(registry: Registry, tmp_path: Path) -> None:
    registry.publish("1.0.0", GOOD)
    code, output = run_install(registry, tmp_path, "--version", "1.0.0")
    assert code == 0, output
    assert "installed in" in output
    assert installed_files(tmp_path) == [
        "1.0.0/.vesalius-install.json",
        f"1.0.0/{BUNDLE}",
        "1.0.0/assets/favicon-16x16.png",
        "1.0.0/index.html",
    ]
    assert (tmp_path / "1.0.0" / "index.html").read_bytes() == INDEX
    downloads = len(registry.requests)
    code, output = run_install(registry, tmp_path, "--version", "1.0.0")
    assert code == 0
    assert "already installed" in output
    assert len(registry.requests) == downloads  # nothing fetched again
    code, output = run_install(registry, tmp_path, "--version", "1.0.0", "--force")
    assert code == 0, output
    assert installed_files(tmp_path)[-1] == "1.0.0/index.html"  # no leftovers beside it
    code, output = run_install(registry, tmp_path, "--version", "latest")
    assert code == 0
    assert "already installed" in output


def test_install_rejects_a_tampered_tarball(registry: Registry, tmp_path: Path) -> None:
    tampered = bytearray(GOOD)
    tampered[len(tampered) // 2] ^= 0xFF
    registry.publish("1.0.0", bytes(tampered), declared=GOOD)
    code, output = run_install(registry, tmp_path, "--version", "1.0.0")
    assert code == 1
    assert "integrity check failed" in output
    assert list(tmp_path.iterdir()) == []  # nothing installed, nothing left over


@pytest.mark.parametrize(
    ("members", "links"),
    [
        ({"package/dist/index.html": INDEX, "package/dist/../../evil.txt": b"x"}, None),
        ({"/package/dist/index.html": INDEX, "package/dist/../evil.txt": b"x"}, None),
        ({"package/dist/index.html": INDEX}, {"package/dist/evil.txt": "/etc/passwd"}),
        ({"package/package.json": b"{}"}, None),  # no dist/index.html: not OHIF
    ],
)
def test_install_refuses_unsafe_or_foreign_tarballs(
    registry: Registry,
    tmp_path: Path,
    members: dict[str, bytes],
    links: dict[str, str] | None,
) -> None:
    registry.publish("1.0.0", tarball(members, links))
    base = tmp_path / "ohif"
    code, output = run_install(registry, base, "--version", "1.0.0")
    assert code == 1, output
    assert not (base / "1.0.0").exists()
    assert list(base.iterdir()) == []
    assert not list(tmp_path.rglob("evil.txt"))


def test_install_of_an_unknown_version_fails_clearly(registry: Registry, tmp_path: Path) -> None:
    registry.publish("1.0.0", GOOD)
    code, output = run_install(registry, tmp_path, "--version", "9.9.9")
    assert code == 1
    assert "no version '9.9.9'" in output
    assert "latest: 1.0.0" in output


def test_viewer_path_prints_the_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"VESALIUS_VIEWER_DIR": str(tmp_path), "VESALIUS_CONFIG": None}
    missing = runner.invoke(main, ["viewer", "path"], env=env)
    assert missing.exit_code == 1
    assert missing.stdout.strip() == str(tmp_path / "3.13.2")
    fake_dist(tmp_path / "3.13.2")
    found = runner.invoke(main, ["viewer", "path"], env=env)
    assert found.exit_code == 0
    assert found.stdout.strip() == str(tmp_path / "3.13.2")


def test_precompressed_assets_are_served_to_gzip_clients(tmp_path: Path) -> None:
    """Big text assets are gzip-compressed once at install and sent as stored (RFC 9110 8.4)."""
    from vesalius.commands.viewer import precompress

    dist = fake_dist(tmp_path / "ohif")
    big = "console.log('ohif');\n" * 2000
    (dist / BUNDLE).write_text(big)
    assert precompress(dist) == 1  # only the bundle is over 1 KiB
    assert (dist / (BUNDLE + ".gz")).is_file()
    with (
        serving(tmp_path, **{"viewer.dir": str(dist)}) as url,
        httpx.Client(base_url=url) as client,
    ):
        raw = client.get("/" + BUNDLE, headers={"Accept-Encoding": "gzip"})
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.headers["vary"] == "Accept-Encoding"
        assert int(raw.headers["content-length"]) < len(big) // 10
        assert raw.text == big  # httpx decodes it
        plain = client.get("/" + BUNDLE, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.text == big
        assert plain.headers["etag"] != raw.headers["etag"]
        assert client.get("/" + BUNDLE + ".gz").status_code == 404


def test_a_script_with_an_ohif_fix_is_served_patched(tmp_path: Path) -> None:
    """The SR content-item fix (vesalius.viewer.ohif_fixes) is applied in memory, found by its
    text: served patched and revalidated, never its stale gzip twin, the installed file
    untouched."""
    from vesalius.commands.viewer import precompress
    from vesalius.viewer.ohif_fixes import SR_CONTENT_ITEM

    dist = fake_dist(tmp_path / "ohif")
    chunk, twice = "9068.bundle.e1d5946c370fd4ee.js", "77.bundle.0123456789abcdef.js"
    original = b"/* OHIF */\n" * 200 + SR_CONTENT_ITEM.old + b"  return null;\n}\n"
    (dist / chunk).write_bytes(original)
    (dist / twice).write_bytes(SR_CONTENT_ITEM.old * 2)  # ambiguous: left alone
    precompress(dist)
    assert (dist / (chunk + ".gz")).is_file()
    with (
        serving(tmp_path, **{"viewer.dir": str(dist)}) as url,
        httpx.Client(base_url=url) as client,
    ):
        for encoding in ("gzip", "identity"):
            answer = client.get("/" + chunk, headers={"Accept-Encoding": encoding})
            assert answer.status_code == 200  # (compressed on the fly for gzip clients)
            assert answer.content == original.replace(SR_CONTENT_ITEM.old, SR_CONTENT_ITEM.new)
            assert b"} = ConceptNameCodeSequence ?? {};" in answer.content
            assert answer.headers["cache-control"] == "no-cache"
            assert answer.headers["content-type"] == "text/javascript; charset=utf-8"
        again = client.get("/" + chunk, headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304
        assert client.get("/" + twice).content == SR_CONTENT_ITEM.old * 2
        assert client.get("/" + BUNDLE).headers["cache-control"].endswith("immutable")
    assert (dist / chunk).read_bytes() == original


def test_a_fix_the_build_has_no_text_for_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from vesalius.viewer.ohif_fixes import FIXES, apply_fixes

    script = tmp_path / "app.bundle.js"
    script.write_text("console.log('another OHIF version');\n")
    with caplog.at_level(logging.WARNING, logger="vesalius.viewer.ohif_fixes"):
        assert apply_fixes({"/app.bundle.js": script}) == {}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == len(FIXES)
    for fix in FIXES:
        assert any(fix.name in line and "not applied" in line for line in warned), warned
