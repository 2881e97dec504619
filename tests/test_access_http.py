"""Access rules of the real server over real HTTP (`python app.py --demo --auth ...`): /health shows
only its status to the unauthenticated, and failed logins back off per client address (the test
connects from several loopback addresses: 127.0.0.2, 127.0.0.3, ...)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.app_server import AppServer
from webui.throttle import FIRST_DELAY_S, FREE_ATTEMPTS

USER, PASSWORD = "alice", "s3cret"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = AppServer(tmp_path_factory.mktemp("access"), auth=(USER, PASSWORD))
    try:
        app.wait_ready()
        yield app
    finally:
        app.stop()


def client_from(address: str, **options) -> httpx.Client:
    """An HTTP client whose connections come from `address` (any 127.x.y.z is this machine)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10, **options)


def login(http: httpx.Client, url: str, password: str) -> httpx.Response:
    return http.post(url + "login", data={"username": USER, "password": password})


def test_health_shows_only_its_status_to_the_unauthenticated(server):
    with client_from("127.0.0.2") as http:
        anonymous = http.get(server.url + "health")
        assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
        wrong = http.get(server.url + "health", auth=(USER, "wrong"))
        assert wrong.json() == {"status": "ok"}
        full = http.get(server.url + "health", auth=(USER, PASSWORD)).json()
        assert full["status"] == "ok" and full["worker"]["state"] == "ready" and "pid" in full["worker"]
        assert "backends" in full["worker"] and "restarts" in full["worker"]
        assert login(http, server.url, PASSWORD).status_code == 200  # the page's login cookie
        assert "worker" in http.get(server.url + "health").json()
    assert server.process.poll() is None


def test_failed_logins_back_off_per_address(server):
    with client_from("127.0.0.3") as attacker, client_from("127.0.0.4") as other:
        for _ in range(FREE_ATTEMPTS):
            assert login(attacker, server.url, "guess").status_code == 400
        refused = login(attacker, server.url, PASSWORD)  # even the right password waits its turn
        assert refused.status_code == 429 and refused.headers["Retry-After"] == f"{FIRST_DELAY_S:g}"
        assert "try again in 1 s" in refused.json()["detail"]
        assert login(other, server.url, PASSWORD).status_code == 200  # another address is not held up

        time.sleep(FIRST_DELAY_S)  # the back-off itself is what is under test
        assert login(attacker, server.url, "guess").status_code == 400
        doubled = login(attacker, server.url, "guess")
        assert doubled.status_code == 429 and doubled.headers["Retry-After"] == f"{2 * FIRST_DELAY_S:g}"

        time.sleep(2 * FIRST_DELAY_S)
        assert login(attacker, server.url, PASSWORD).status_code == 200  # a right password starts afresh
        assert login(attacker, server.url, "guess").status_code == 400
        assert login(attacker, server.url, PASSWORD).status_code == 200


def test_guessing_passwords_through_health_is_throttled_too(server):
    with client_from("127.0.0.5") as attacker:
        for _ in range(FREE_ATTEMPTS + 3):
            assert attacker.get(server.url + "health", auth=(USER, "guess")).json() == {"status": "ok"}
        # in back-off now: the right password is not even looked at
        assert attacker.get(server.url + "health", auth=(USER, PASSWORD)).json() == {"status": "ok"}
        assert login(attacker, server.url, PASSWORD).status_code == 429
