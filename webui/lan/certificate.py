"""The self-signed certificate of `--lan`: made on first use with `cryptography`, kept in a folder
(`cert.pem`, `key.pem` with mode 0600), reused while it names every local name and has more than
RENEW_BEFORE left, made anew otherwise.

It meets what phone browsers require of a server certificate even when the user accepts it by
hand (iOS refuses others outright): subjectAltName entries for every name (DNS and IP), extended
key usage serverAuth, not a CA, an ECDSA P-256 key, SHA-256, at most 397 days of validity.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cosyvoice3.files import atomic_write

from .names import LocalNames

log = logging.getLogger(__name__)

CERT_FILE, KEY_FILE = "cert.pem", "key.pem"
VALID_FOR = dt.timedelta(days=397)
RENEW_BEFORE = dt.timedelta(days=30)
ORGANIZATION = "cosyfast (self-signed)"


@dataclass(frozen=True)
class Certificate:
    """certfile/keyfile: the PEM files; made: whether this call made them (else reused);
    reason: why they were made ("" when reused)."""

    certfile: Path
    keyfile: Path
    made: bool = False
    reason: str = ""


def ensure_certificate(folder: str | Path, names: LocalNames, now: dt.datetime | None = None) -> Certificate:
    """The certificate in `folder` for `names`: the kept one when it still fits, else a new one."""
    folder = Path(folder)
    certfile, keyfile = folder / CERT_FILE, folder / KEY_FILE
    now = now or dt.datetime.now(dt.timezone.utc)
    reason = renewal_reason(certfile, keyfile, names, now)
    if not reason:
        return Certificate(certfile, keyfile)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(key, names, now)
    # the key first: a certificate never lands without its key
    atomic_write(keyfile, lambda f: f.write(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())), mode=0o600)
    atomic_write(certfile, lambda f: f.write(cert.public_bytes(serialization.Encoding.PEM)), mode=0o644)
    log.info("made a self-signed certificate in %s (%s)", folder, reason)
    return Certificate(certfile, keyfile, made=True, reason=reason)


def renewal_reason(certfile: Path, keyfile: Path, names: LocalNames, now: dt.datetime) -> str:
    """Why the kept certificate cannot serve `names` at `now` ("" when it can)."""
    if not certfile.is_file() or not keyfile.is_file():
        return "none yet"
    try:
        cert = x509.load_pem_x509_certificate(certfile.read_bytes())
        key = serialization.load_pem_private_key(keyfile.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        return f"unreadable: {e}"
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        return "the key does not match"
    left = cert.not_valid_after_utc - now
    if left < RENEW_BEFORE:
        return f"expires in {max(0, left.days)} days"
    if cert.not_valid_before_utc > now:
        return "not valid yet"
    missing = set(_wanted(names)) - set(certificate_names(cert))
    if missing:
        return "new names: " + ", ".join(sorted(str(name) for name in missing))
    return ""


def certificate_names(cert: x509.Certificate) -> list[str | ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The subjectAltName entries of `cert` (DNS names as str, addresses as ipaddress objects)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *san.get_values_for_type(x509.IPAddress)]


def _wanted(names: LocalNames) -> list:
    return [*names.dns, *names.ips]


def _self_signed(key: ec.EllipticCurvePrivateKey, names: LocalNames, now: dt.datetime) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cosyfast"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)])
    alt_names = [*(x509.DNSName(name) for name in names.dns), *(x509.IPAddress(ip) for ip in names.ips)]
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))  # a phone's clock may be a little behind
            .not_valid_after(now + VALID_FOR)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
