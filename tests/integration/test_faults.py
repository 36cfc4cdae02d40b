"""Upstream faults injected at the simulator map to the documented answers,
and the gateway serves a normal request correctly after each one:

  vendor 500 / 503 / 429 (+Retry-After)               -> relayed as sent
  a 200 whose body is not a JSON array (malformed)     -> 502 bad_gateway
  (after a 429 the key is blocked for Retry-After: the gateway's own 429)
  connection reset, truncated body, upstream down,
  body over --max-body-bytes                           -> 502 bad_gateway
  no answer within --upstream-timeout (1000 ms)        -> 504 gateway_timeout

The gateway runs with --ttl 0 when it has a cache: every request goes upstream.
"""
import time

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a, contacts=2000)
NO_CACHE = ["--ttl", "0"] if "--ttl" in h.gateway_options(a) else []
gw = h.start_gateway(a, sim.port, *NO_CACHE, "--upstream-timeout", "1000")
run.watch(gw, sim)


def still_serving(port=None, sim_port=None):
    """A normal request through the gateway equals the simulator's answer."""
    q = "days=30&limit=2"
    r = h.contacts(port or gw.port, q)
    d = h.contacts(sim_port or sim.port, q)
    assert r.status == 200 and r.body == d.body, ("not serving after the fault", r)
    assert r.header("content-type") == d.header("content-type")


def faulted_direct(kind, query, **params):
    """What the simulator itself answers with the fault: the reference."""
    h.sim_fault(sim, kind, **params)
    return h.contacts(sim.port, query)


def relayed(r, d, what):
    assert r.status == d.status, (what, "gateway", r, "vendor", d)
    assert r.header("content-type") == d.header("content-type"), (what, r.headers, d.headers)
    assert r.body == d.body, (what, r.body[:200], d.body[:200])


@run.test
def status_500_and_503_relayed():
    for code in (500, 503):
        d = faulted_direct("status", "days=5", status=code)
        assert d.status == code
        h.sim_fault(sim, "status", status=code)
        relayed(h.contacts(gw.port, "days=5"), d, code)
        still_serving()


@run.test
def other_vendor_error_statuses_relayed_not_rewritten():
    # the vendor's own 400/404/502/504 are its answers, not the gateway's JSON
    for code in (400, 401, 404, 502, 504):
        d = faulted_direct("status", "days=5&limit=%d" % code, status=code)
        h.sim_fault(sim, "status", status=code)
        relayed(h.contacts(gw.port, "days=5&limit=%d" % code), d, code)
    still_serving()


@run.test
def rate_limited_429_relayed_with_retry_after():
    d = faulted_direct("429", "days=8", retry_after=7)
    assert d.status == 429 and d.header("retry-after") == "7", d.headers
    h.sim_fault(sim, "429", retry_after=7, key=h.KEY_C)
    r = h.contacts(gw.port, "days=8", key=h.KEY_C)
    relayed(r, d, 429)
    assert r.header("retry-after") == "7", r.headers
    # the key is blocked now: the gateway answers 429 itself, upstream untouched
    before = h.sim_stats(sim)["total"]
    r = h.contacts(gw.port, "days=8&limit=3", key=h.KEY_C)
    h.json_error(r, 429, "rate_limited")
    assert 1 <= int(r.header("retry-after")) <= 7, r.headers
    assert h.sim_stats(sim)["total"] == before
    still_serving()  # another key is not blocked


@run.test
def malformed_body_is_502():
    d = faulted_direct("malformed", "days=9")
    assert d.status == 200 and d.body == b'[{"id":"broken"', d
    h.sim_fault(sim, "malformed")
    r = h.contacts(gw.port, "days=9")
    h.json_error(r, 502, "bad_gateway")
    assert "not a JSON array" in r.json()["message"], r
    assert "fwd-status=200" in r.header("cache-status"), r.headers
    still_serving()


@run.test
def reset_is_502():
    # every request reset until cleared: the gateway may retry once on a fresh
    # connection (docs/configuration.md), and that is reset too
    h.sim_fault(sim, "reset", count=0)
    try:
        t0 = time.time()
        h.json_error(h.contacts(gw.port, "days=6"), 502, "bad_gateway")
        assert time.time() - t0 < 5
        h.json_error(h.contacts(gw.port, "days=6&limit=1"), 502, "bad_gateway")
        r = h.contacts(gw.port, "days=6", method="HEAD")
        assert r.status == 502 and r.body == b"", r
    finally:
        h.sim_clear_faults(sim)
    still_serving()


@run.test
def a_single_reset_is_502_or_one_retry():
    h.sim_fault(sim, "reset", count=1)
    r = h.contacts(gw.port, "days=6&limit=3")
    if r.status == 200:  # retried once on a fresh connection
        assert r.body == h.contacts(sim.port, "days=6&limit=3").body
    else:
        h.json_error(r, 502, "bad_gateway")
    still_serving()


@run.test
def hang_is_504_within_the_upstream_timeout():
    h.sim_fault(sim, "hang", ms=5000)
    t0 = time.time()
    r = h.contacts(gw.port, "days=7", timeout=10)
    took = time.time() - t0
    h.json_error(r, 504, "gateway_timeout")
    assert 0.9 <= took < 2.5, "504 after %.2fs, upstream-timeout is 1 s" % took
    still_serving()


@run.test
def slow_upstream_is_504_within_the_upstream_timeout():
    h.sim_latency(sim, 3000)
    try:
        t0 = time.time()
        r = h.contacts(gw.port, "days=12", timeout=10)
        took = time.time() - t0
    finally:
        h.sim_latency(sim, 0)
    h.json_error(r, 504, "gateway_timeout")
    assert 0.9 <= took < 2.5, took
    still_serving()


@run.test
def upstream_just_under_the_timeout_is_served():
    h.sim_latency(sim, 500)
    try:
        r = h.contacts(gw.port, "days=13&limit=4", timeout=10)
    finally:
        h.sim_latency(sim, 0)
    assert r.status == 200 and r.body == h.contacts(sim.port, "days=13&limit=4").body, r


@run.test
def truncated_body_is_502():
    for q in ("days=365", "days=2&limit=1"):
        h.sim_fault(sim, "truncated")
        h.json_error(h.contacts(gw.port, q), 502, "bad_gateway")
        still_serving()


@run.test
def fault_for_one_key_only():
    h.sim_fault(sim, "status", status=503, key=h.KEY_B, count=0)
    try:
        assert h.contacts(gw.port, "days=10", key=h.KEY_B).status == 503
        assert h.contacts(gw.port, "days=10", key=h.KEY_B).status == 503
        r = h.contacts(gw.port, "days=10", key=h.KEY_A)
        assert r.status == 200 and r.body == h.contacts(sim.port, "days=10").body
    finally:
        h.sim_clear_faults(sim)
    r = h.contacts(gw.port, "days=10", key=h.KEY_B)
    assert r.status == 200 and r.body == h.contacts(sim.port, "days=10", key=h.KEY_B).body


@run.test
def many_faults_in_a_row_then_normal_service():
    kinds = [("status", {}), ("reset", {"count": 2}), ("malformed", {}), ("truncated", {}),
             ("429", {}), ("status", {"status": 503})]
    for kind, params in kinds:
        if kind == "429":  # blocks its key for Retry-After: one of its own
            h.sim_fault(sim, kind, key=h.KEY_B, retry_after=1, **params)
            r = h.contacts(gw.port, "days=20", key=h.KEY_B)
            assert r.status == 429, r
            continue
        h.sim_fault(sim, kind, **params)
        r = h.contacts(gw.port, "days=20")
        assert r.status in (500, 502, 200, 429, 503), (kind, r)
    h.sim_clear_faults(sim)
    for _ in range(5):
        still_serving()


@run.test
def body_over_max_body_bytes_is_502():
    small = h.start_gateway(a, sim.port, *NO_CACHE, "--max-body-bytes", "10000")
    try:
        r = h.contacts(small.port, "days=365")  # about 1 MB
        h.json_error(r, 502, "bad_gateway")
        still_serving(small.port)
    finally:
        h.stop_gateway(small)


@run.test
def max_body_bytes_boundary():
    q = "days=365&limit=15"
    size = len(h.contacts(sim.port, q).body)
    assert 5000 < size < 20000, size
    at = h.start_gateway(a, sim.port, *NO_CACHE, "--max-body-bytes", str(size))
    under = h.start_gateway(a, sim.port, *NO_CACHE, "--max-body-bytes", str(size - 1))
    try:
        r = h.contacts(at.port, q)
        assert r.status == 200 and len(r.body) == size, ("a body of exactly the limit", r)
        h.json_error(h.contacts(under.port, q), 502, "bad_gateway")
        still_serving(under.port)
    finally:
        h.stop_gateway(at)
        h.stop_gateway(under)


@run.test
def upstream_going_down_is_502():
    sim2 = h.start_sim(a)
    g = h.start_gateway(a, sim2.port, *NO_CACHE)
    try:
        still_serving(g.port, sim2.port)  # a kept-alive upstream connection now exists
        assert sim2.stop() == 0
        for _ in range(3):
            t0 = time.time()
            h.json_error(h.contacts(g.port, "days=3"), 502, "bad_gateway")
            assert time.time() - t0 < 5
        r = h.request(g.port, "/healthz")
        assert r.status == 200, r
    finally:
        h.stop_gateway(g)


@run.test
def upstream_never_listening_is_502():
    g = h.start_gateway(a, h.free_port(), *NO_CACHE)
    try:
        for _ in range(2):
            h.json_error(h.contacts(g.port, "days=3"), 502, "bad_gateway")
    finally:
        h.stop_gateway(g)


@run.test
def clean_exit():
    h.stop_gateway(gw)
    assert sim.stop() == 0, sim.tail()


run.run()
