"""HTTPS for the server: a self-signed certificate made once, its fingerprint, the context.

The server carries a password and runs code, so it speaks TLS by default even
without a certificate from an authority: it makes a self-signed one on first
start, keeps it in the state directory, and prints its SHA-256 fingerprint so a
client can pin it (``openssl x509 -noout -fingerprint -sha256`` shows the same).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import secrets
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificatePaths",
    "TLSError",
    "ensure_self_signed",
    "fingerprint_sha256",
    "ssl_context",
]

ALWAYS = ("localhost", "127.0.0.1", "::1")
VALIDITY = dt.timedelta(days=3650)
RENEW_BEFORE = dt.timedelta(days=7)  # regenerate rather than start with a cert about to lapse


class TLSError(ValueError):
    """A certificate or key that cannot be used: the message names the file and the remedy."""


@dataclass(frozen=True)
class CertificatePaths:
    certfile: Path
    keyfile: Path
    fingerprint: str


def _dns_name(host: str) -> str:
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise TLSError(f"{host!r} is not a host name that a certificate can name") from None


def _san_entries(hosts: list[str]) -> list[x509.GeneralName]:
    """Hosts as SubjectAlternativeName entries: IPs as IPAddress, names as (IDNA) DNSName."""
    names: list[x509.GeneralName] = []
    for host in [*ALWAYS, *hosts]:
        host = host.strip().strip("[]").rstrip(".")
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            # "" binds every interface: clients come by this machine's name
            entry: x509.GeneralName = x509.DNSName(_dns_name(host or socket.gethostname()))
        else:
            if address.is_unspecified:  # 0.0.0.0 / :: bind everything: same as above
                entry = x509.DNSName(_dns_name(socket.gethostname()))
            else:
                entry = x509.IPAddress(address)
        if entry not in names:
            names.append(entry)
    return names


def _generate(names: list[x509.GeneralName]) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jupyter-mole")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - dt.timedelta(hours=1))  # tolerate a client's clock skew
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a private temporary file and rename: never half-written, never too open."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)  # exact, whatever the umask
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Two servers starting at once must not pair one's key with the other's certificate."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a mismatch is caught on the next start
        yield
        return
    fd = os.open(directory / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _reusable(certfile: Path, keyfile: Path, names: list[x509.GeneralName]) -> bool:
    """A kept pair is reused if it is readable, matching, private, current and covers the hosts."""
    try:
        cert = x509.load_pem_x509_certificate(certfile.read_bytes())
        key = serialization.load_pem_private_key(keyfile.read_bytes(), password=None)
        if os.name == "posix" and keyfile.stat().st_mode & 0o077:
            return False  # others could have read the key: it is no longer secret
        if key.public_key() != cert.public_key():
            return False
        if cert.not_valid_after_utc - RENEW_BEFORE < dt.datetime.now(dt.UTC):
            return False
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return all(name in san for name in names)
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound):
        return False


def ensure_self_signed(state_directory: Path, hosts: list[str]) -> CertificatePaths:
    """The server's self-signed certificate and key in ``state_directory/tls``.

    Made on first start (EC P-256, CN "jupyter-mole", the hosts plus localhost,
    127.0.0.1 and ::1 as SubjectAlternativeName, valid ten years), then reused so
    its fingerprint stays stable for clients that pinned it. Regenerated when the
    kept pair is unreadable, mismatched, expiring, too readable, or lacks a host.
    """
    directory = Path(state_directory) / "tls"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    names = _san_entries(hosts)
    with _locked(directory):
        if not _reusable(certfile, keyfile, names):
            cert_pem, key_pem = _generate(names)
            _write_atomic(keyfile, key_pem, 0o600)
            _write_atomic(certfile, cert_pem, 0o644)
    return CertificatePaths(certfile, keyfile, fingerprint_sha256(certfile))


def _read(path: Path, what: str, remedy: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise TLSError(f"{what} file {path} does not exist: {remedy}") from None
    except OSError as e:
        raise TLSError(f"{what} file {path} cannot be read ({e.strerror or e}): {remedy}") from None


def _load_certificate(certfile: Path, remedy: str) -> x509.Certificate:
    data = _read(certfile, "certificate", remedy)
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        raise TLSError(f"certificate file {certfile} is not a PEM certificate: {remedy}") from None


def fingerprint_sha256(certfile: Path | str) -> str:
    """SHA-256 of the DER certificate as ``AB:CD:...``, as browsers and openssl show it."""
    cert = _load_certificate(Path(certfile), "give the server's PEM certificate")
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def ssl_context(certfile: Path | str, keyfile: Path | str) -> ssl.SSLContext:
    """A server-side context (TLS 1.2 or newer) for this certificate and its key."""
    certfile, keyfile = Path(certfile), Path(keyfile)
    remedy = (
        "give --certfile and --keyfile a PEM certificate and its unencrypted key, "
        "or leave both out to use a self-signed certificate"
    )
    cert = _load_certificate(certfile, remedy)
    key_pem = _read(keyfile, "key", remedy)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TLSError(f"key file {keyfile} is encrypted: {remedy}") from None
    except ValueError:
        raise TLSError(f"key file {keyfile} is not a PEM private key: {remedy}") from None
    if key.public_key() != cert.public_key():
        raise TLSError(
            f"the key in {keyfile} does not match the certificate in {certfile}: give the key "
            "the certificate was made with (for the self-signed one, delete both files and "
            "restart to make a new pair)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as e:
        raise TLSError(f"cannot use {certfile} with {keyfile}: {e.reason or e}: {remedy}") from None
    return context
