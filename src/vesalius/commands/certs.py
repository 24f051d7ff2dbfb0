"""``vesalius cert create``: a self-signed authority and the certificates of a test site, so
DIMSE over TLS and HTTPS (PS3.15 B.9, ``vesalius/tls.py``) can be tried in one command.

A site in production uses certificates from its own authority; these are for a laptop, a test
network or the test suite. Keys are ECDSA P-256 (RFC 9325 allows it and every TLS 1.2 peer
of the BCP 195 profile has it), written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vesalius.commands import config_option, settings_from

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

#: Days a certificate made here is valid.
DAYS = 825


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    certificate: Path
    private_key: Path


def _key() -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: EllipticCurvePrivateKey, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_certificate(certificate: object, path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    assert isinstance(certificate, x509.Certificate)
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def make_authority(
    folder: Path, name: str = "Vesalius test CA", *, stem: str = "ca", days: int = DAYS
) -> Issued:
    """A self-signed certificate authority: ``<stem>.pem`` and ``<stem>-key.pem``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    issued = Issued(folder / f"{stem}.pem", folder / f"{stem}-key.pem")
    _write_key(key, issued.private_key)
    _write_certificate(certificate, issued.certificate)
    return issued


def issue(
    authority: Issued,
    folder: Path,
    stem: str,
    common_name: str,
    *,
    names: tuple[str, ...] = (),
    client: bool = False,
    days: int = DAYS,
    expired: bool = False,
) -> Issued:
    """A certificate signed by ``authority``: a server's (subject alternative ``names``, DNS
    names or IP addresses; good for TLS clients too) or a client's only (``client``);
    ``expired``: one that ended yesterday (for tests)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_certificate = x509.load_pem_x509_certificate(authority.certificate.read_bytes())
    ca_key = serialization.load_pem_private_key(authority.private_key.read_bytes(), None)
    key = _key()
    public = key.public_key()
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    if expired:
        start, end = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    # A server's certificate is also the one it presents when it calls peers (C-MOVE
    # sub-operations, send jobs) that ask for a client certificate: both purposes.
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if not client:
        usage.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_certificate.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
    )
    if alternatives:
        builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
    certificate = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    issued = Issued(folder / f"{stem}.pem", folder / f"{stem}-key.pem")
    _write_key(key, issued.private_key)
    _write_certificate(certificate, issued.certificate)
    return issued


def server_names(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """localhost, 127.0.0.1, ::1, this host's name (and fully qualified name), and ``extra``."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn(), *extra]
    return tuple(dict.fromkeys(n for n in names if n))


@click.group()
def cert() -> None:
    """Certificates for DIMSE over TLS and HTTPS (docs/security.md)."""


@cert.command("create")
@config_option
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder to write to (default: <data_dir>/tls).",
)
@click.option("--san", multiple=True, help="A further DNS name or IP address of this server.")
@click.option(
    "--client",
    multiple=True,
    metavar="NAME",
    help="Also make a client certificate (CN=NAME) for the peer NAME (mutual TLS).",
)
@click.option("--days", type=click.IntRange(1, 3650), default=DAYS, show_default=True)
def create(
    config: Path | None,
    folder: Path | None,
    san: tuple[str, ...],
    client: tuple[str, ...],
    days: int,
) -> None:
    """Make a self-signed authority (kept and reused when the folder has one), a server
    certificate for this host, and client certificates; print the settings to add."""
    if folder is None:
        folder = settings_from(config).data_dir / "tls"
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    authority = Issued(folder / "ca.pem", folder / "ca-key.pem")
    if authority.certificate.is_file() and authority.private_key.is_file():
        click.echo(f"using the authority in {authority.certificate}")
    else:
        authority = make_authority(folder, days=days)
        click.echo(f"made an authority: {authority.certificate}")
    names = server_names(san)
    server = issue(authority, folder, "server", names[0], names=names, days=days)
    click.echo(f"made a server certificate for {', '.join(names)}: {server.certificate}")
    for name in client:
        made = issue(authority, folder, f"client-{name}", name, client=True, days=days)
        click.echo(f"made a client certificate for peer {name} (CN={name}): {made.certificate}")
    click.echo("\nAdd to the settings file:\n")
    click.echo("[tls]")
    click.echo(f'certificate = "{server.certificate}"')
    click.echo(f'private_key = "{server.private_key}"')
    click.echo(f'ca_certificates = "{authority.certificate}"')
    if client:
        click.echo('verify_clients = "optional"  # or "required": mutual TLS')
    click.echo("\n[dicom]\ntls_port = 2762\n\n[http]\ntls = true  # HTTPS")
