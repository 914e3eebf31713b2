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
    "host, allowed, well_formed",
    [
        ("192.168.1.20:8000", True, True),
        ("[fe80::1]:8000", True, True),
        ("localhost:8000", True, True),
        ("UNIT.local", True, True),
        ("unit.local.", True, True),
        ("attacker.example", False, True),
        ("attacker.example:8000", False, True),
        ("192.168.1.20:port", False, False),
        ("attacker.example@localhost", False, False),
        ("[notip]:80", False, False),
        ("[", False, False),
    ],
)
def test_the_host_must_be_an_address_or_one_of_the_units_names(host, allowed, well_formed):
    assert host_allowed(host, NAMES) is allowed
    assert host_allowed(host, NAMES | {"*"}) is well_formed  # allowed_hosts = "*": any, if it is a host


def test_an_origin_is_the_units_own_when_the_host_header_names_it():
    assert same_origin("http://192.168.1.20:8000", "192.168.1.20:8000")
    assert same_origin("http://unit.local", "unit.local:80")
    assert not same_origin("http://192.168.1.20:8001", "192.168.1.20:8000")
    assert same_origin("https://unit.local", "unit.local")  # a TLS proxy in front: the host decides
    assert not same_origin("https://192.168.1.20", "192.168.1.20:8000")  # https's default port, 443
    assert not same_origin("null", "192.168.1.20:8000")  # a sandboxed page, a file
    assert not same_origin("http://[x", "192.168.1.20:8000") and not same_origin("http://a:99999", "a:99999")


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
    for host, origin in (("[", None), ("127.0.0.1", "http://[x"), ("127.0.0.1", "http://a:99999")):
        headers = {"Host": host, **({"Origin": origin} if origin else {})}
        assert unit.post("/api/system/free", headers=headers).status_code == 403  # malformed: refused, no 500
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
