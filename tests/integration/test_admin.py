"""The admin endpoint: off by default, loopback only, bearer token; status,
offline switch, purge (all, by key hash, by query prefix, expired)."""
import hashlib
import re
import subprocess
import time

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a, contacts=500)
TOKEN = "s3cret-admin-token-0123456789"
gw = h.start_gateway(a, sim.port, "--ttl", "60", "--admin-listen", "127.0.0.1:0",
                     "--admin-token", TOKEN)
run.watch(gw, sim)


def admin_port(g):
    found = []

    def seen():
        with open(g.log, "rb") as f:
            m = re.search(rb"admin endpoint on 127\.0\.0\.1:(\d+)", f.read())
        if m:
            found.append(int(m.group(1)))
        return bool(found)

    h.eventually(seen, what="the admin endpoint's port in the log")
    return found[0]


ADMIN = admin_port(gw)


def admin(method, path, token=TOKEN):
    headers = {"Authorization": "Bearer " + token} if token is not None else {}
    return h.request(ADMIN, path, method=method, headers=headers)


def key_hash(key):
    return hashlib.sha256(key.encode()).hexdigest()


@run.test
def the_token_is_required():
    h.json_error(admin("GET", "/admin/status", token=None), 401, "unauthorized")
    h.json_error(admin("GET", "/admin/status", token=TOKEN + "x"), 401, "unauthorized")
    h.json_error(admin("GET", "/admin/status", token=TOKEN[:-1]), 401, "unauthorized")
    r = admin("GET", "/admin/status")
    assert r.status == 200, r
    j = r.json()
    assert j["offline"] is False and j["breaker"] == "closed", j


@run.test
def routes_and_methods():
    h.json_error(admin("GET", "/admin/purge?all=true"), 405, "method_not_allowed")
    h.json_error(admin("GET", "/admin/nothing"), 404, "not_found")
    h.json_error(admin("POST", "/admin/purge"), 400, "invalid_parameter")
    h.json_error(admin("POST", "/admin/purge?key_hash=xyz"), 400, "invalid_parameter")
    h.json_error(admin("POST", "/admin/purge?all=true&expired=true"), 400,
                 "invalid_parameter")
    h.json_error(admin("POST", "/admin/offline?on=maybe"), 400, "invalid_parameter")
    # the admin routes are not on the public listener
    assert h.request(gw.port, "/admin/status",
                     headers={"Authorization": "Bearer " + TOKEN}).status == 404


@run.test
def offline_switch():
    assert h.contacts(gw.port, "days=11").status == 200
    r = admin("POST", "/admin/offline?on=true")
    assert r.status == 200 and r.json() == {"offline": True}, r
    h.json_error(h.contacts(gw.port, "days=12"), 504, "offline")
    assert h.contacts(gw.port, "days=11").status == 200  # stored
    assert admin("GET", "/admin/status").json()["offline"] is True
    assert admin("POST", "/admin/offline?on=false").json() == {"offline": False}
    assert h.contacts(gw.port, "days=12").status == 200


@run.test
def purge_by_key_hash_takes_one_tenant_only():
    for q in ("days=20", "days=21"):
        for key in (h.KEY_A, h.KEY_B):
            assert h.contacts(gw.port, q, key=key).status == 200
    r = admin("POST", "/admin/purge?key_hash=" + key_hash(h.KEY_A)[:12].upper())
    assert r.status == 200 and r.json()["deleted"] >= 2, r
    before = h.sim_total(sim)
    assert "hit" in h.contacts(gw.port, "days=20", key=h.KEY_B).header("cache-status")
    assert "fwd=miss" in h.contacts(gw.port, "days=20", key=h.KEY_A).header("cache-status")
    assert h.sim_total(sim) == before + 1


@run.test
def purge_by_query_prefix_expired_and_all():
    for q in ("days=30&limit=1", "days=30&limit=2", "days=31"):
        assert h.contacts(gw.port, q).status == 200
    r = admin("POST", "/admin/purge?query_prefix=days%3D30%26")
    assert r.json()["deleted"] == 2, r
    assert "hit" in h.contacts(gw.port, "days=31").header("cache-status")
    assert admin("POST", "/admin/purge?expired=true").json()["deleted"] == 0
    assert admin("POST", "/admin/purge?all=true").json()["deleted"] >= 1
    assert admin("GET", "/admin/status").json()["cache_entries"] == 0


@run.test
def refused_settings():
    for extra, why in ((["--admin-listen", "0.0.0.0:0", "--admin-token", TOKEN],
                        "not a loopback address"),
                       (["--admin-listen", "127.0.0.1:0"], "admin-token is not"),
                       (["--admin-listen", "127.0.0.1:0", "--admin-token", "short"],
                        "at least 16")):
        p = subprocess.run([a.gateway, "--listen", "127.0.0.1:0"] + extra,
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 2 and why in p.stderr, (extra, p.returncode, p.stderr)


@run.test
def off_by_default():
    g = h.start_gateway(a, sim.port)
    try:
        time.sleep(0.1)
        with open(g.log, "rb") as f:
            assert b"admin endpoint" not in f.read()
    finally:
        h.stop_gateway(g)


@run.test
def clean_exit():
    h.stop_gateway(gw)
    assert sim.stop() == 0, sim.tail()


run.run()
