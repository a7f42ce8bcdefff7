"""The server's TLS: a kept self-signed certificate, its fingerprint, a real handshake."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jupyter_mole.server.tls import (
    TLSError,
    ensure_self_signed,
    fingerprint_sha256,
    ssl_context,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


@posix_only
def test_first_start_makes_a_private_key_and_a_public_certificate(tmp_path: Path) -> None:
    old = os.umask(0)  # the most permissive umask: modes must not depend on it
    try:
        paths = ensure_self_signed(tmp_path, ["127.0.0.1"])
    finally:
        os.umask(old)
    assert paths.certfile == tmp_path / "tls" / "cert.pem"
    assert paths.keyfile == tmp_path / "tls" / "key.pem"
    assert paths.keyfile.stat().st_mode & 0o777 == 0o600
    assert paths.certfile.stat().st_mode & 0o777 == 0o644
    assert not [p for p in (tmp_path / "tls").iterdir() if p.name.endswith(".tmp")]


def test_certificate_content(tmp_path: Path) -> None:
    paths = ensure_self_signed(tmp_path, ["mole.example.test", "10.1.2.3", "[fd00::5]"])
    cert = load(paths.certfile)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "jupyter-mole"
    assert cert.issuer == cert.subject
    names = san(cert)
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "mole.example.test"}
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.1.2.3", "fd00::5")
    }
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=3640) < lifetime < dt.timedelta(days=3660)
    key = serialization.load_pem_private_key(paths.keyfile.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()


def test_second_start_reuses_the_pair(tmp_path: Path) -> None:
    first = ensure_self_signed(tmp_path, ["127.0.0.1"])
    key_bytes = first.keyfile.read_bytes()
    second = ensure_self_signed(tmp_path, ["127.0.0.1"])
    assert second == first
    assert second.keyfile.read_bytes() == key_bytes


def test_a_new_host_makes_a_new_certificate_naming_it(tmp_path: Path) -> None:
    first = ensure_self_signed(tmp_path, ["127.0.0.1"])
    second = ensure_self_signed(tmp_path, ["mole.example.test"])
    assert second.fingerprint != first.fingerprint
    assert "mole.example.test" in san(load(second.certfile)).get_values_for_type(x509.DNSName)


def test_unreadable_pair_is_regenerated(tmp_path: Path) -> None:
    first = ensure_self_signed(tmp_path, [])
    first.certfile.write_text("not a certificate\n")
    second = ensure_self_signed(tmp_path, [])
    assert second.fingerprint != first.fingerprint
    ssl_context(second.certfile, second.keyfile)


def test_expired_certificate_is_regenerated(tmp_path: Path) -> None:
    first = ensure_self_signed(tmp_path, [])
    key = serialization.load_pem_private_key(first.keyfile.read_bytes(), password=None)
    old = load(first.certfile)
    now = dt.datetime.now(dt.UTC)
    expired = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.issuer)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(san(old), critical=False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    first.certfile.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    second = ensure_self_signed(tmp_path, [])
    assert load(second.certfile).not_valid_after_utc > now + dt.timedelta(days=3000)


@posix_only
def test_key_readable_by_others_is_replaced(tmp_path: Path) -> None:
    first = ensure_self_signed(tmp_path, [])
    first.keyfile.chmod(0o644)
    second = ensure_self_signed(tmp_path, [])
    assert second.fingerprint != first.fingerprint
    assert second.keyfile.stat().st_mode & 0o777 == 0o600


def test_fingerprint_format(tmp_path: Path) -> None:
    paths = ensure_self_signed(tmp_path, [])
    fingerprint = fingerprint_sha256(paths.certfile)
    assert fingerprint == paths.fingerprint
    pairs = fingerprint.split(":")
    assert len(pairs) == 32
    assert all(len(p) == 2 and p == p.upper() and int(p, 16) >= 0 for p in pairs)
    der = ssl.PEM_cert_to_DER_cert(paths.certfile.read_text())
    assert fingerprint.replace(":", "") == hashlib.sha256(der).hexdigest().upper()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")
def test_fingerprint_matches_openssl(tmp_path: Path) -> None:
    paths = ensure_self_signed(tmp_path, [])
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(paths.certfile)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip().split("=", 1)[1] == paths.fingerprint


def test_real_handshake_on_loopback(tmp_path: Path) -> None:
    paths = ensure_self_signed(tmp_path, ["127.0.0.1"])
    server_context = ssl_context(paths.certfile, paths.keyfile)
    assert server_context.minimum_version >= ssl.TLSVersion.TLSv1_2
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(64).upper())
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cafile=str(paths.certfile))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            peer = tls.getpeercert()
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"ping")
            assert tls.recv(64) == b"PING"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        thread.join(10)
        listener.close()
    assert not errors
    assert ("IP Address", "127.0.0.1") in peer["subjectAltName"]
    assert x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()).hex(":").upper() == (
        paths.fingerprint
    )


def test_a_client_pinning_another_certificate_is_refused(tmp_path: Path) -> None:
    ours = ensure_self_signed(tmp_path / "a", ["127.0.0.1"])
    other = ensure_self_signed(tmp_path / "b", ["127.0.0.1"])
    server_context = ssl_context(ours.certfile, ours.keyfile)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            server_context.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cafile=str(other.certfile))
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=10) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            client_context.wrap_socket(raw, server_hostname="127.0.0.1")
    finally:
        thread.join(10)
        listener.close()


def test_mismatched_key_is_a_clear_error(tmp_path: Path) -> None:
    a = ensure_self_signed(tmp_path / "a", [])
    b = ensure_self_signed(tmp_path / "b", [])
    with pytest.raises(TLSError) as info:
        ssl_context(a.certfile, b.keyfile)
    message = str(info.value)
    assert f"the key in {b.keyfile} does not match the certificate in {a.certfile}" in message
    assert isinstance(info.value, ValueError)  # `serve` reports ValueErrors as usage errors


def test_missing_and_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    paths = ensure_self_signed(tmp_path, [])
    missing = tmp_path / "nope.pem"
    with pytest.raises(
        TLSError, match=re.escape(f"certificate file {missing} does not exist: give")
    ):
        ssl_context(missing, paths.keyfile)
    with pytest.raises(TLSError, match=re.escape(f"key file {missing} does not exist: give")):
        ssl_context(paths.certfile, missing)
    with pytest.raises(TLSError, match=re.escape(f"certificate file {paths.keyfile} is not a PEM")):
        ssl_context(paths.keyfile, paths.keyfile)
    with pytest.raises(
        TLSError, match=re.escape(f"key file {paths.certfile} is not a PEM private key")
    ):
        ssl_context(paths.certfile, paths.certfile)
    encrypted = tmp_path / "encrypted.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(TLSError, match=re.escape(f"key file {encrypted} is encrypted")):
        ssl_context(paths.certfile, encrypted)
    with pytest.raises(TLSError, match="does not exist"):
        fingerprint_sha256(missing)
