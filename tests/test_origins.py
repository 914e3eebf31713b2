"""The front door against the LAN's browsers: other sites' pages may not change what the unit
holds (cross-site requests), nor read it through a name of theirs (DNS rebinding); an origin in
``allowed_origins`` may, with CORS. The rules as plain functions, then on the real service."""

from __future__ import annotations

import pytest
import requests

from edge_asr.server.origins import host_allowed, same_origin
from tests.service import ASR, Service

NAMES = frozenset({"localhost", "unit", "unit.local"})


@pytest.mark.parametrize(
    "host, allowed",
    [
        ("192.168.1.20:8000", True),
        ("[fe80::1]:8000", True),
        ("localhost:8000", True),
        ("UNIT.local", True),
        ("attacker.example", False),
        ("attacker.example:8000", False),
    ],
)
def test_the_host_must_be_an_address_or_one_of_the_units_names(host, allowed):
    assert host_allowed(host, NAMES) is allowed
    assert host_allowed(host, NAMES | {"*"})  # allowed_hosts = "*": any
    assert not host_allowed("192.168.1.20:port", NAMES | {"*"})  # but not a malformed one


def test_an_origin_is_the_units_own_when_the_host_header_names_it():
    assert same_origin("http://192.168.1.20:8000", "192.168.1.20:8000")
    assert same_origin("http://unit.local", "unit.local:80")
    assert not same_origin("http://192.168.1.20:8001", "192.168.1.20:8000")
    assert same_origin("https://unit.local", "unit.local")  # a TLS proxy in front: the host decides
    assert not same_origin("https://192.168.1.20", "192.168.1.20:8000")  # https's default port, 443
    assert not same_origin("null", "192.168.1.20:8000")  # a sandboxed page, a file


@pytest.fixture(scope="module")
def unit(tmp_path_factory, whisper_spec):
    svc = Service(tmp_path_factory.mktemp("origins") / "state", EDGE_ASR_ALLOWED_ORIGINS="http://dashboard.lan:3000")
    svc.start()
    assert svc.post(f"/api/models/{ASR}/load").ok
    yield svc
    svc.stop()


def test_another_sites_form_post_cannot_unload_a_model(unit: Service):
    r = unit.post(f"/api/models/{ASR}/unload", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert "Access-Control-Allow-Origin" not in r.headers
    assert unit.model(ASR)["state"] == "ready"
    assert unit.post("/api/system/free", headers={"Origin": "null"}).status_code == 403
    assert unit.model(ASR)["state"] == "ready"
    # reading is not refused (the browser does not let the page read it: no CORS headers)
    r = unit.get("/api/models", headers={"Origin": "http://evil.example"})
    assert r.ok and "Access-Control-Allow-Origin" not in r.headers


def test_a_name_the_unit_does_not_have_is_refused(unit: Service):
    """DNS rebinding: attacker.example resolving to the unit must not make its page same-origin."""
    for path in ("/api/models", "/healthz", "/"):
        r = unit.get(path, headers={"Host": "attacker.example"})
        assert r.status_code == 403 and "allowed_hosts" in r.json()["error"]["message"], path
    assert unit.get("/api/models", headers={"Host": f"localhost:{unit.port}"}).ok


def test_the_units_own_page_and_an_allowed_origin_may_act(unit: Service):
    own = unit.post(f"/api/models/{ASR}/load", headers={"Origin": unit.url})
    assert own.ok and "Access-Control-Allow-Origin" not in own.headers  # same origin: no CORS needed
    dashboard = {"Origin": "http://dashboard.lan:3000"}
    preflight = requests.options(
        unit.url + f"/api/models/{ASR}/settings",
        headers={**dashboard, "Access-Control-Request-Method": "PATCH"},
        timeout=10,
    )
    assert preflight.ok and preflight.headers["Access-Control-Allow-Origin"] == "http://dashboard.lan:3000"
    assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
    r = unit.get("/api/models", headers=dashboard)
    assert r.ok and r.headers["Access-Control-Allow-Origin"] == "http://dashboard.lan:3000"
