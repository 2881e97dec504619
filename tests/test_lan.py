"""webui/lan/ in-process: the certificate (names, reuse, renewal, file modes), the kept login,
the URLs and QR codes of the phone link. Real files, real keys; nothing goes over the network."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import stat

import psutil
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.qr_codes import decode_text_qr, qr_lines
from webui.lan import console_banner, network_link
from webui.lan.certificate import RENEW_BEFORE, certificate_names, ensure_certificate
from webui.lan.login import kept_login
from webui.lan.names import LocalNames, local_names
from webui.lan.qr import qr_text

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)


def mode_of(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def interface_addresses() -> set:
    """Every IPv4/IPv6 address psutil lists, independently of webui/lan/names.py."""
    found = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                found.add(ipaddress.ip_address(entry.address.split("%")[0]))
    return found


def test_the_certificate_names_localhost_the_host_and_every_local_address(tmp_path):
    names = local_names()
    made = ensure_certificate(tmp_path, names, now=NOW)
    assert made.made and made.reason == "none yet"
    cert = load(made.certfile)
    in_cert = certificate_names(cert)
    assert "localhost" in in_cert and socket.gethostname().lower() in in_cert
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")} <= set(in_cert)
    assert interface_addresses() <= set(in_cert)
    # what phone browsers demand of a server certificate, even one accepted by hand
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=398)
    assert mode_of(made.keyfile) == 0o600 and mode_of(made.certfile) == 0o644


def test_a_fitting_certificate_is_reused(tmp_path):
    names = local_names()
    first = ensure_certificate(tmp_path, names, now=NOW)
    pem, key = first.certfile.read_bytes(), first.keyfile.read_bytes()
    again = ensure_certificate(tmp_path, names, now=NOW + dt.timedelta(days=100))
    assert not again.made and again.certfile.read_bytes() == pem and again.keyfile.read_bytes() == key


def test_a_new_name_renews_the_certificate(tmp_path):
    names = local_names()
    ensure_certificate(tmp_path, names, now=NOW)
    moved = LocalNames(names.dns, (*names.ips, ipaddress.ip_address("198.51.100.7")))  # a new address
    renewed = ensure_certificate(tmp_path, moved, now=NOW)
    assert renewed.made and "198.51.100.7" in renewed.reason
    assert ipaddress.ip_address("198.51.100.7") in certificate_names(load(renewed.certfile))
    renamed = LocalNames(("another-name", *moved.dns), moved.ips)
    assert "another-name" in ensure_certificate(tmp_path, renamed, now=NOW).reason
    assert mode_of(renewed.keyfile) == 0o600


def test_a_certificate_near_its_end_is_renewed(tmp_path):
    names = local_names()
    first = ensure_certificate(tmp_path, names, now=NOW)
    end = load(first.certfile).not_valid_after_utc
    assert not ensure_certificate(tmp_path, names, now=end - RENEW_BEFORE - dt.timedelta(days=1)).made
    later = end - RENEW_BEFORE + dt.timedelta(days=1)
    renewed = ensure_certificate(tmp_path, names, now=later)
    assert renewed.made and renewed.reason.startswith("expires in")
    assert load(renewed.certfile).not_valid_after_utc - later > dt.timedelta(days=300)


def test_a_broken_or_foreign_key_is_replaced(tmp_path):
    names = local_names()
    first = ensure_certificate(tmp_path, names, now=NOW)
    other = ensure_certificate(tmp_path / "other", names, now=NOW)
    first.keyfile.write_bytes(other.keyfile.read_bytes())
    assert ensure_certificate(tmp_path, names, now=NOW).reason == "the key does not match"
    first.certfile.write_text("not a certificate")
    assert ensure_certificate(tmp_path, names, now=NOW).reason.startswith("unreadable")
    assert not ensure_certificate(tmp_path, names, now=NOW).made


def test_the_login_is_made_once_and_kept_private(tmp_path):
    login, made = kept_login(tmp_path)
    user, _, password = login.partition(":")
    assert made and user == "cosyfast" and len(password) >= 16
    assert mode_of(tmp_path / "login") == 0o600
    assert kept_login(tmp_path) == (login, False)
    assert kept_login(tmp_path / "elsewhere")[0] != login


def test_phone_urls_leave_out_loopback_and_link_local_and_put_ipv4_first():
    names = LocalNames(("host", "localhost"), tuple(ipaddress.ip_address(a) for a in (
        "127.0.0.1", "::1", "fe80::1", "2001:db8::5", "198.51.100.9")))
    assert names.urls(7860) == ["https://198.51.100.9:7860/", "https://[2001:db8::5]:7860/"]
    assert network_link("127.0.0.1", 7860, secure=False) is None
    assert network_link("localhost", 7860, secure=False) is None
    assert network_link("::1", 7860, secure=True) is None
    assert network_link("198.51.100.9", 80, secure=False).urls == ("http://198.51.100.9:80/",)
    everywhere = network_link("0.0.0.0", 7860, secure=True)
    assert everywhere.urls == tuple(local_names().urls(7860))
    assert all(not ipaddress.ip_address(u.split("//")[1].rsplit(":", 1)[0].strip("[]")).is_loopback
               for u in everywhere.urls)


def test_the_console_qr_code_reads_back_as_the_url():
    url = "https://198.51.100.9:7860/"
    assert decode_text_qr(qr_lines(qr_text(url))) == [url]
    link = network_link("198.51.100.9", 7860, secure=True)
    banner = console_banner(link, "cosyfast:secret")
    assert decode_text_qr(qr_lines(banner)) == [link.urls[0]] and "secret" in banner


def test_lan_serving_gathers_certificate_login_and_link(tmp_path):
    from webui.lan import lan_serving

    everywhere = lan_serving(tmp_path, "::", 7860)
    assert everywhere.link.urls == tuple(local_names().urls(7860)) and everywhere.link.self_signed
    assert everywhere.generated_login and everywhere.auth == kept_login(tmp_path)[0]
    assert everywhere.certfile == tmp_path / "cert.pem"
    one = lan_serving(tmp_path, "198.51.100.9", 443, auth="me:pw", certfile="/c.pem", keyfile="/k.pem")
    assert one.link.urls == ("https://198.51.100.9:443/",) and not one.link.self_signed
    assert (one.auth, one.generated_login, str(one.certfile)) == ("me:pw", False, "/c.pem")
