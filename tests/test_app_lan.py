"""`python app.py --lan` as a user starts it (real process, real worker on the demo model): HTTPS
with the certificate it keeps in its cache, bound to every interface, a login required, the
generated password printed and kept across a restart, the phone URL and its QR code in the
console. Every connection goes to 127.0.0.1; the network addresses are only read."""

from __future__ import annotations

import base64
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.app_server import AppServer
from tests.qr_codes import decode_text_qr, qr_lines
from webui.lan.certificate import ensure_certificate
from webui.lan.names import local_names

pytestmark = pytest.mark.timeout(600)


def https_get(url: str, cafile, headers: dict | None = None):
    """(status, body) of a GET verified against `cafile` (the app's own certificate)."""
    context = ssl.create_default_context(cafile=str(cafile))
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def served_certificate(port: int, server_name: str) -> bytes:
    """The certificate the server presents to a client that names it `server_name` (DER)."""
    context = ssl._create_unverified_context()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return tls.getpeercert(binary_form=True)


def listening_addresses(pid: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def start(root, **options) -> AppServer:
    server = AppServer(root, lan=True, **options)
    try:
        return server.wait_ready()
    except BaseException:
        server.stop()
        raise


def test_lan_serves_https_with_its_kept_certificate_and_a_kept_login(tmp_path):
    server = start(tmp_path)
    try:
        lan = server.cache_dir / "lan"
        cert_pem = (lan / "cert.pem").read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        assert (lan / "key.pem").stat().st_mode & 0o777 == 0o600
        assert (lan / "login").stat().st_mode & 0o777 == 0o600
        # bound to every interface; reached (only) on loopback, by address and by name, verified
        assert listening_addresses(server.process.pid) & {"0.0.0.0", "::"}
        assert served_certificate(server.port, "localhost") == cert.public_bytes(Encoding.DER)
        status, _ = https_get(f"https://127.0.0.1:{server.port}/health", lan / "cert.pem")
        assert status == 200
        status, _ = https_get(f"https://localhost:{server.port}/health", lan / "cert.pem")
        assert status == 200
        # a login is required: /health shows only its status, the page's API refuses, the login works
        user, password = server.lan_login()
        assert user == "cosyfast"
        status, body = https_get(server.url + "health", lan / "cert.pem")
        assert status == 200 and body == b'{"status":"ok"}'
        status, body = https_get(server.url + "health", lan / "cert.pem", headers=basic(user, password))
        assert b'"worker"' in body
        assert https_get(server.url + "config", lan / "cert.pem")[0] == 401
        assert login(server.url, lan / "cert.pem", user, "wrong") in (400, 401)
        assert login(server.url, lan / "cert.pem", user, password) == 200
        # the console: the phone URLs, the QR code of the first, the password
        console = server.log_path.read_text()
        urls = local_names().urls(server.port)
        for url in urls:
            assert f"  {url}\n" in console
        if urls:
            assert decode_text_qr(qr_lines(console)) == [urls[0]]
        assert password in console and "self-signed" in console
    finally:
        server.stop()

    again = start(tmp_path)  # a restart: the same certificate, the same password
    try:
        assert again.lan_login() == (user, password)
        assert (lan / "cert.pem").read_bytes() == cert_pem
        assert served_certificate(again.port, "localhost") == cert.public_bytes(Encoding.DER)
        assert login(again.url, lan / "cert.pem", user, password) == 200
        assert password in again.log_path.read_text()
    finally:
        again.stop()


def test_lan_takes_the_given_login_and_certificate(tmp_path):
    own = ensure_certificate(tmp_path / "own", local_names())
    server = start(tmp_path, auth=("me", "my-pass"),
                   args=["--ssl-certfile", str(own.certfile), "--ssl-keyfile", str(own.keyfile)])
    try:
        assert served_certificate(server.port, "localhost") == \
            x509.load_pem_x509_certificate(own.certfile.read_bytes()).public_bytes(Encoding.DER)
        assert not (server.cache_dir / "lan" / "cert.pem").exists()
        assert not (server.cache_dir / "lan" / "login").exists()
        assert login(server.url, own.certfile, "me", "my-pass") == 200
        assert "my-pass" not in server.log_path.read_text()  # a given password is never printed
    finally:
        server.stop()


def login(url: str, cafile, user: str, password: str) -> int:
    """The status of Gradio's login form posted with these credentials."""
    data = urllib.parse.urlencode({"username": user, "password": password}).encode()
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "login", data=data), timeout=10,
                                    context=context) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code

