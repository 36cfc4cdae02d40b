"""Outages: stale-if-error, stale-while-revalidate and offline replay, with
the real gateway, the simulator and a real LMDB directory.

  every fault the simulator injects, with an expired entry stored
      -> 200, the stored bytes, Cache-Status fwd=stale; fwd-status=...; ttl<0,
         Age; the entry is intact afterwards
  the same faults with nothing stored -> the documented error
  past --stale-if-error -> the error, not the old answer
  --stale-while-revalidate -> the stale answer at once, one refresh behind
  --offline (flag, SIGRTMIN+1/SIGRTMIN+2) -> every stored answer, nothing upstream
"""
import signal
import threading
import time

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a, contacts=800)
run.watch(sim)

# What each fault gives: the forward status named in Cache-Status, and the
# answer a client gets when nothing is stored.
FAULTS = [
    ("status 500", {"kind": "status", "status": 500}, 500, (500, None)),
    ("status 503", {"kind": "status", "status": 503}, 503, (503, None)),
    ("reset", {"kind": "reset", "count": 2}, 502, (502, "bad_gateway")),
    ("hang", {"kind": "hang", "ms": 3000}, 504, (504, "gateway_timeout")),
    ("malformed", {"kind": "malformed"}, 200, (502, "bad_gateway")),
    ("truncated", {"kind": "truncated"}, 502, (502, "bad_gateway")),
    ("429", {"kind": "429", "retry_after": 1}, 429, (429, None)),
]


def fault(params):
    p = dict(params)
    kind = p.pop("kind")
    h.sim_fault(sim, kind, **p)


def stale_status(r):
    """(fwd-status, ttl) from a stale answer's Cache-Status."""
    cs = r.header("cache-status")
    parts = dict(p.strip().split("=", 1) for p in cs.split(";")[1:] if "=" in p)
    return parts, cs


@run.test
def every_fault_with_a_stored_answer_serves_it_stale():
    g = h.start_gateway(a, sim.port, "--ttl", "1", "--upstream-timeout", "600")
    try:
        for i, (name, params, fwd, _) in enumerate(FAULTS):
            q = "days=%d" % (40 + i)
            good = h.contacts(g.port, q)
            assert good.status == 200, (name, good)
            time.sleep(1.1)  # expired now
            fault(params)
            r = h.contacts(g.port, q)
            h.sim_clear_faults(sim)
            parts, cs = stale_status(r)
            assert r.status == 200 and r.body == good.body, (name, r, cs)
            assert parts.get("fwd") == "stale", (name, cs)
            assert parts.get("fwd-status") == str(fwd), (name, cs)
            assert int(parts["ttl"]) < 0 and parts.get("detail") == "stale-if-error", cs
            assert r.header("etag") == good.header("etag"), (name, r.headers)
            assert int(r.header("age")) >= 1, r.headers
            if name == "429":
                time.sleep(1.1)  # the key is blocked for Retry-After
            # the stored entry is intact: the next good answer replaces it
            again = h.contacts(g.port, q)
            assert again.status == 200 and again.body == good.body, (name, again)
            assert "stored" in again.header("cache-status"), again.header("cache-status")
    finally:
        h.sim_clear_faults(sim)
        h.stop_gateway(g)


@run.test
def every_fault_with_nothing_stored_gives_the_documented_answer():
    g = h.start_gateway(a, sim.port, "--ttl", "60", "--upstream-timeout", "600")
    try:
        for i, (name, params, _, (status, error)) in enumerate(FAULTS):
            q = "days=%d" % (60 + i)
            fault(params)
            r = h.contacts(g.port, q, key=h.KEY_B)
            h.sim_clear_faults(sim)
            assert r.status == status, (name, r)
            if error:
                h.json_error(r, status, error)
            if name == "malformed":  # never relayed, never stored
                assert "stored" not in r.header("cache-status")
            if name == "429":
                time.sleep(1.1)
        # nothing failed was stored: each query now goes upstream and stores
        for i in range(len(FAULTS)):
            r = h.contacts(g.port, "days=%d" % (60 + i), key=h.KEY_B)
            assert r.status == 200 and "stored" in r.header("cache-status"), r
    finally:
        h.sim_clear_faults(sim)
        h.stop_gateway(g)


@run.test
def past_the_stale_if_error_window_the_error_comes_through():
    g = h.start_gateway(a, sim.port, "--ttl", "1", "--stale-if-error", "1")
    try:
        q = "days=70"
        assert h.contacts(g.port, q).status == 200
        time.sleep(2.2)  # expired for over a second
        fault({"kind": "status", "status": 503})
        r = h.contacts(g.port, q)
        assert r.status == 503, r
    finally:
        h.sim_clear_faults(sim)
        h.stop_gateway(g)


@run.test
def no_cache_requests_get_the_error_not_a_stale_answer():
    g = h.start_gateway(a, sim.port, "--ttl", "1")
    try:
        q = "days=71"
        assert h.contacts(g.port, q).status == 200
        time.sleep(1.1)
        fault({"kind": "status", "status": 503})
        r = h.contacts(g.port, q, headers={"Cache-Control": "no-cache"})
        assert r.status == 503, r
    finally:
        h.sim_clear_faults(sim)
        h.stop_gateway(g)


@run.test
def stale_while_revalidate_answers_at_once_and_refreshes_once():
    g = h.start_gateway(a, sim.port, "--ttl", "1", "--stale-while-revalidate", "30")
    try:
        q = "days=72&limit=5"
        first = h.contacts(g.port, q)
        assert first.status == 200
        time.sleep(1.1)
        h.sim_latency(sim, 400 * h.SLOW)
        before = h.sim_total(sim)
        try:
            t0 = time.time()
            answers = [h.contacts(g.port, q) for _ in range(5)]
            took = time.time() - t0
            for r in answers:
                parts, cs = stale_status(r)
                assert r.status == 200 and r.body == first.body, r
                assert parts.get("detail") == "stale-while-revalidate", cs
                assert int(parts["ttl"]) < 0 and "fwd" not in parts, cs
            # five stale answers, none waited for the slow upstream
            assert took < 0.4 * h.SLOW, took
            h.eventually(lambda: "hit; ttl=" in h.contacts(g.port, q).header("cache-status")
                         and "detail" not in h.contacts(g.port, q).header("cache-status"),
                         timeout=5 * h.SLOW, what="the refreshed entry")
        finally:
            h.sim_latency(sim, 0)
        assert h.sim_total(sim) == before + 1, ("refreshed exactly once",
                                                 h.sim_total(sim) - before)
    finally:
        h.stop_gateway(g)


@run.test
def offline_replay_after_the_vendor_is_gone():
    sim2 = h.start_sim(a, contacts=300)
    d = h.tmpdir("offline-cache")
    queries = ["days=%d&limit=%d" % (d_, l) for d_ in (5, 30, 90) for l in (1, 20)]
    g = h.start_gateway(a, sim2.port, "--ttl", "1", cache_dir=d)
    warm = {}
    try:
        for q in queries:
            r = h.contacts(g.port, q)
            assert r.status == 200, r
            warm[q] = r
    finally:
        h.stop_gateway(g)
    assert sim2.stop() == 0
    time.sleep(1.1)  # every entry expired
    g = h.start_gateway(a, sim2.port, "--offline", cache_dir=d)
    try:
        for q in queries:
            r = h.contacts(g.port, q)
            parts, cs = stale_status(r)
            assert r.status == 200 and r.body == warm[q].body, (q, r)
            assert r.header("etag") == warm[q].header("etag")
            assert parts.get("detail") == "offline" and int(parts["ttl"]) < 0, cs
        # what was never stored: a clear JSON 504, the upstream not tried
        r = h.contacts(g.port, "days=6")
        h.json_error(r, 504, "offline")
        assert "offline" in r.json()["message"]
    finally:
        h.stop_gateway(g)


@run.test
def offline_switched_at_run_time_by_signal():
    g = h.start_gateway(a, sim.port, "--ttl", "60")
    try:
        assert h.contacts(g.port, "days=73").status == 200
        # SIGUSR1 reopens logs now (as nginx): it must not switch anything
        g.p.send_signal(signal.SIGUSR1)
        h.eventually(lambda: "SIGUSR1: logs reopened" in g.read_log(), what="SIGUSR1 handled")
        assert "offline" not in g.read_log()
        g.p.send_signal(signal.SIGRTMIN + 1)
        # the switch is logged once the loop has handled the signal
        h.eventually(lambda: "offline: answering from the cache only" in g.read_log(),
                     what="offline after SIGRTMIN+1")
        before = h.sim_total(sim)
        h.json_error(h.contacts(g.port, "days=74"), 504, "offline")
        assert h.contacts(g.port, "days=73").status == 200  # stored: still served
        assert h.sim_total(sim) == before
        g.p.send_signal(signal.SIGRTMIN + 2)
        h.eventually(lambda: "online: asking the upstream again" in g.read_log(),
                     what="online after SIGRTMIN+2")
        assert h.contacts(g.port, "days=74").status == 200
        assert h.sim_total(sim) == before + 1
    finally:
        h.stop_gateway(g)


@run.test
def a_fetch_queued_before_going_offline_is_never_sent():
    g = h.start_gateway(a, sim.port, "--upstream-rate", "0.5", "--upstream-burst", "1",
                        "--queue-timeout", str(8000 * h.SLOW), "--upstream-retries", "0",
                        protect=True)
    try:
        assert h.contacts(g.port, "days=79").status == 200  # the only token
        before = h.sim_total(sim)
        out = {}
        t = threading.Thread(target=lambda: out.update(
            r=h.contacts(g.port, "days=80", timeout=20 * h.SLOW)))
        t.start()
        time.sleep(0.3)  # days=80 waits for a token (about 2 s)
        g.p.send_signal(signal.SIGRTMIN + 1)
        t.join(20 * h.SLOW)
        h.json_error(out["r"], 504, "offline")
        assert h.sim_total(sim) == before, "offline, yet a queued fetch went upstream"
    finally:
        h.stop_gateway(g)


@run.test
def offline_while_the_breaker_is_open_when_configured():
    g = h.start_gateway(a, sim.port, "--ttl", "1", "--breaker-threshold", "2",
                        "--breaker-cooldown", str(2000 * h.SLOW), "--offline-when-open",
                        protect=True)
    try:
        good = h.contacts(g.port, "days=75")
        assert good.status == 200
        time.sleep(1.1)
        h.sim_fault(sim, "status", status=500, count=100)
        for q in ("days=76", "days=77"):  # two failures (no retries past 500)
            assert h.contacts(g.port, q).status == 500
        before = h.sim_total(sim)
        r = h.contacts(g.port, "days=75")  # expired, stored: served as offline
        parts, cs = stale_status(r)
        assert r.status == 200 and r.body == good.body, r
        assert parts.get("detail") == "offline", cs
        h.json_error(h.contacts(g.port, "days=78"), 504, "offline")
        assert h.sim_total(sim) == before, "asked the upstream while open"
    finally:
        h.sim_clear_faults(sim)
        h.stop_gateway(g)


@run.test
def clean_exit():
    assert sim.stop() == 0, sim.tail()


run.run()
