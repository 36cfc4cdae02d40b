"""Upstream faults injected at the simulator map to the documented answers, and
the gateway keeps serving afterwards. --ttl 0: every request goes upstream."""
import time

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a, contacts=2000)
gw = h.start_gateway(a, sim.port, "--ttl", "0", "--upstream-timeout", "1000")
run.watch(gw)


def fault(kind, **kw):
    q = "&".join("%s=%s" % kv for kv in kw.items())
    h.sim_post(sim, "/__sim/fault?kind=%s%s" % (kind, "&" + q if q else ""))


def still_serving():
    r = h.contacts(gw.port, "days=30&limit=2")
    assert r.status == 200 and len(r.json()) == 2, (r.status, r.body[:200])


def json_error(r, status, error):
    assert r.status == status, (r.status, r.body[:300])
    assert r.header("content-type").startswith("application/json")
    body = r.json()
    assert body["error"] == error and body["message"], body


@run.test
def status_500_and_503_relayed():
    for code in (500, 503):
        fault("status", status=code)
        r = h.contacts(gw.port, "days=5")
        assert r.status == code
        assert r.json() == {"statusCode": code, "message": "injected fault"}
        still_serving()


@run.test
def reset_is_502():
    # libcurl retries once, on a fresh connection, a request whose reused
    # keep-alive connection dies unanswered; so the fault is played twice
    fault("reset", count=2)
    json_error(h.contacts(gw.port, "days=6"), 502, "bad_gateway")
    still_serving()


@run.test
def hang_is_504_after_the_upstream_timeout():
    fault("hang", ms=5000)
    t0 = time.time()
    r = h.contacts(gw.port, "days=7", timeout=10)
    took = time.time() - t0
    json_error(r, 504, "gateway_timeout")
    assert 0.9 < took < 3.0, took
    still_serving()


@run.test
def rate_limited_429_relayed_with_retry_after():
    fault("429", retry_after=7)
    r = h.contacts(gw.port, "days=8")
    assert r.status == 429 and r.header("retry-after") == "7"
    still_serving()


@run.test
def malformed_body_relayed_unchanged():
    fault("malformed")
    r = h.contacts(gw.port, "days=9")
    assert r.status == 200 and r.body == b'[{"id":"broken"'
    still_serving()


@run.test
def truncated_body_is_502():
    fault("truncated")
    json_error(h.contacts(gw.port, "days=365"), 502, "bad_gateway")
    still_serving()


@run.test
def fault_for_one_key_only():
    fault("status", status=503, key=h.KEY_B, count=0)
    assert h.contacts(gw.port, "days=10", key=h.KEY_B).status == 503
    assert h.contacts(gw.port, "days=10", key=h.KEY_A).status == 200
    h.sim_post(sim, "/__sim/faults/clear")
    assert h.contacts(gw.port, "days=10", key=h.KEY_B).status == 200


@run.test
def body_over_the_limit_is_502():
    small = h.start_gateway(a, sim.port, "--ttl", "0", "--max-body-bytes", "10000")
    try:
        json_error(h.contacts(small.port, "days=365"), 502, "bad_gateway")
        r = h.contacts(small.port, "days=30&limit=2")
        assert r.status == 200
    finally:
        h.stop_gateway(small)


@run.test
def upstream_down_is_502():
    down = h.start_gateway(a, 1, "--ttl", "0")  # nothing listens on port 1
    try:
        json_error(h.contacts(down.port, "days=3"), 502, "bad_gateway")
        json_error(h.contacts(down.port, "days=3"), 502, "bad_gateway")
    finally:
        h.stop_gateway(down)


@run.test
def clean_exit():
    h.stop_gateway(gw)
    assert sim.stop() == 0, sim.read_log()[-2000:]


run.run()
