"""Upstream protection on the real gateway, counted at the simulator:

- per-key token bucket (--upstream-rate, --upstream-burst): 200 concurrent
  distinct misses never make more than rate + burst upstream requests in any
  1-second window; every client gets 200 (the vendor's answer) or 429 +
  Retry-After, in bounded time;
- the queue: a miss whose wait cannot end within --queue-timeout is 429 at
  once (an honest Retry-After), or a stored expired answer marked
  detail=rate-limited; a full per-key queue (--queue-limit) is 429 at once;
  a queued client that disconnects costs no upstream request;
- --upstream-concurrency caps the requests in progress at the vendor;
- a vendor 429 blocks its key for Retry-After (seconds, or an HTTP-date from
  a stub vendor in this file: the simulator only sends seconds), other keys
  unaffected; the 429 and its rate-limit headers are relayed;
- retries of 502/503/504 (--upstream-retries), each costing a token;
- the circuit breaker (--breaker-threshold, --breaker-cooldown): open,
  stale or 503 upstream_unavailable at once, probe, reopen, close;
- per-caller quotas (--caller-header, --caller-rate, --caller-burst); the
  last two caller scenarios reproduce a bug found while writing this file
  (admit.c's queue is FIFO per API key, so a noisy caller's queued misses,
  waiting for the caller's own token, hold up and can lock out other callers
  of the key; and a caller-limited miss is queued on the key's rate
  estimate although its wait cannot end within --queue-timeout).

Every gateway here runs with protect=True and sets what it tests.
"""
import email.utils
import re
import socket
import threading
import time

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a)
run.watch(sim)
GATEWAYS = []
WRAPPED = bool(h.WRAP)
# An ASan/UBSan build is several times slower too: the same allowance.
with open(a.gateway, "rb") as _f:
    SLOWED = WRAPPED or b"__asan_init" in _f.read()


def gateway(*flags, upstream_port=None):
    """A protected gateway (only our flags) in front of the simulator (or a
    stub on upstream_port); stopped by done() or clean_exit."""
    g = h.start_gateway(a, upstream_port or sim.port, "--shutdown-timeout", "2000",
                        *flags, protect=True)
    GATEWAYS.append(g)
    return g


def done(g):
    """Stops a gateway; it must exit 0 (sanitizers, valgrind)."""
    GATEWAYS.remove(g)
    h.stop_gateway(g)


def stats():
    return h.sim_stats(sim)


def count_a():
    return stats()["by_key"].get(h.KEY_A, 0)


def retry_after(r, lo=1, hi=None):
    """The integer Retry-After of r, checked to be in lo..hi."""
    v = r.header("retry-after")
    assert v is not None and v.isdigit(), ("Retry-After not an integer", r.headers)
    n = int(v)
    assert n >= lo and (hi is None or n <= hi), ("Retry-After %d not in %s..%s" % (n, lo, hi),
                                                 r.headers)
    return n


LIMITS = ("key_rate", "caller_quota", "queue_full", "queue_timeout", "vendor_429",
          "new_key_rate", "client_rate")


def rate_limited(r, hi=None, limit=None):
    """The gateway's own 429: JSON rate_limited naming the limit it met (one
    of LIMITS; `limit` if given), an integer Retry-After, and RateLimit-Policy
    / RateLimit fields (IETF draft) for that limit, saying none is left until
    Retry-After seconds from now."""
    h.json_error(r, 429, "rate_limited")
    body = r.json()
    assert body.get("limit") in LIMITS, ("no limit named", body)
    if limit is not None:
        assert body["limit"] == limit, (limit, body)
    ra = retry_after(r, 1, hi)
    name = body["limit"]
    pol = r.header("ratelimit-policy") or ""
    m = re.fullmatch(r'"%s";q=(\d+);w=(\d+)' % name, pol)
    assert m and int(m.group(2)) >= 1, ("RateLimit-Policy", pol, r.headers)
    if name == "vendor_429":
        assert m.group(1) == "0", pol
    assert r.header("ratelimit") == '"%s";r=0;t=%d' % (name, ra), r.headers
    return ra


def stale(r, detail, body=None):
    """A stored answer served past its expiry, marked with `detail`."""
    assert r.status == 200, r
    cs = r.header("cache-status") or ""
    assert cs.startswith("contacts-gateway; hit; ttl=-"), cs
    assert ("; detail=%s" % detail) in cs, cs
    age = r.header("age")
    assert age is not None and age.isdigit() and int(age) >= 1, r.headers
    if body is not None:
        assert r.body == body, "the stale answer is not the stored body"


def vendor(q, key=h.KEY_A):
    """The simulator's own answer (counted at the simulator: ask after counting)."""
    return h.contacts(sim.port, q, key)


def timed(fn, *args, **kw):
    t0 = time.time()
    r = fn(*args, **kw)
    return r, time.time() - t0


def max_window(times_ms, width=1000):
    """The most timestamps in any half-open window [t, t + width)."""
    ts = sorted(times_ms)
    best, j = 0, 0
    for i in range(len(ts)):
        while ts[i] - ts[j] >= width:
            j += 1
        best = max(best, i - j + 1)
    return best


def raw_send(port, query, key=h.KEY_A):
    s = socket.create_connection(("127.0.0.1", port), timeout=h.TIMEOUT)
    s.sendall(("GET %s?%s HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\n\r\n"
               % (h.PATH, query, key)).encode())
    return s


def raw_read_status(s, timeout):
    s.settimeout(timeout)
    got = b""
    try:
        while b"\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    finally:
        s.close()
    return h.raw_status(got)


# ---- a stub vendor: HTTP-date Retry-After and rate-limit headers ----

class Stub(h.KeyStub):
    """A minimal vendor on loopback. Per key, `plan[key]` is a list of
    answers to give next (callables returning (status, headers)); without
    one, 200 []. `count[key]` counts requests."""

    def __init__(self):
        self.plan = {}
        super().__init__()

    def answer(self, key, path):
        with self.lock:
            todo = self.plan.get(key) or []
            answer = todo.pop(0) if todo else None
        if answer is None:
            return 200, [], b"[]"
        status, headers = answer()
        return status, headers, b'{"statusCode":%d,"message":"stub"}' % status


# ---- scenarios ----

@run.test
def rate_and_burst_hold_under_200_concurrent_misses():
    RATE, BURST, QT = 20, 10, 2000
    g = gateway("--upstream-rate", str(RATE), "--upstream-burst", str(BURST),
                "--queue-timeout", str(QT), "--queue-limit", "500", "--ttl", "60",
                "--upstream-retries", "0", "--upstream-concurrency", "32")
    h.sim_reset(sim)
    results = {}
    start = threading.Event()

    def one(d):
        start.wait(10)
        t0 = time.time()
        try:
            r = h.contacts(g.port, "days=%d&limit=5" % d, timeout=30 * h.SLOW)
        except Exception as e:  # a hang or a dropped connection: reported below
            r = e
        results[d] = (r, time.time() - t0)

    threads = [threading.Thread(target=one, args=(d,), daemon=True) for d in range(1, 201)]
    for t in threads:
        t.start()
    t0 = time.time()
    start.set()
    for t in threads:
        t.join(max(0.1, t0 + 40 * h.SLOW - time.time()))
    assert len(results) == 200, "%d of 200 clients answered" % len(results)
    st = stats()
    bad = {d: r for d, (r, _) in results.items()
           if not isinstance(r, h.Response) or r.status not in (200, 429)}
    assert not bad, ("answers other than 200/429", list(bad.items())[:5])
    ok = [d for d, (r, _) in results.items() if r.status == 200]
    limited = [d for d, (r, _) in results.items() if r.status == 429]
    for d in limited:
        rate_limited(results[d][0], hi=600)
    slowest = max(took for _, took in results.values())
    assert slowest < (QT / 1000.0 + 2) * h.SLOW, "a client waited %.2fs" % slowest
    # upstream: one request per 200, all of key A, never over rate+burst per second
    mine = [x for x in st["recent"] if x["key"] == h.KEY_A]
    assert st["total"] == len(ok) == len(mine), (st["total"], len(ok), len(mine))
    # The buckets act when a fetch is granted; the simulator stamps its
    # arrival. Normally the two are a millisecond apart. Under valgrind the
    # gateway's loop can hold granted fetches for hundreds of ms while it
    # accepts the 200 connections, and they then arrive together (an ASan
    # build, less so, too): there the window is allowed one more second of
    # rate, and the total is checked
    # against the bucket over the whole time the gateway could grant.
    stamps = [x["t_ms"] for x in mine]
    worst = max_window(stamps)
    slack = RATE if SLOWED else 0
    assert worst <= RATE + BURST + slack, "%d upstream requests in one second" % worst
    granting = (max(stamps) - t0 * 1000) / 1000.0
    assert len(mine) <= BURST + RATE * granting + 1, (len(mine), granting)
    assert len(ok) >= BURST and limited, (len(ok), len(limited))
    # the 200s are the vendor's answers
    for d in ok:
        r = results[d][0]
        assert r.body == vendor("days=%d&limit=5" % d).body, d
        assert "fwd=miss" in (r.header("cache-status") or ""), r.headers
    done(g)


@run.test
def a_wait_past_the_queue_timeout_is_429_at_once_or_stale():
    g = gateway("--upstream-rate", "1", "--upstream-burst", "1", "--queue-timeout", "300",
                "--queue-limit", "10", "--ttl", "1", "--upstream-retries", "0")
    h.sim_reset(sim)
    first = h.contacts(g.port, "days=21")  # takes the only token
    assert first.status == 200, first
    r, took = timed(h.contacts, g.port, "days=22")
    ra = rate_limited(r, hi=2, limit="key_rate")
    assert took < 0.5 * h.SLOW, "the 429 took %.2fs (queue timeout 300 ms)" % took
    assert h.sim_total(sim) == 1
    # honest: after Retry-After seconds a token is there
    time.sleep(ra)
    r = h.contacts(g.port, "days=23")
    assert r.status == 200 and "fwd=miss" in r.header("cache-status"), r
    # that took the token again; days=21 (stored, expired by now) cannot wait
    r, took = timed(h.contacts, g.port, "days=21")
    stale(r, "rate-limited", first.body)
    assert took < 0.5 * h.SLOW, took
    assert h.sim_total(sim) == 2
    done(g)


@run.test
def a_full_queue_is_429_at_once_and_the_queue_is_fifo():
    g = gateway("--upstream-rate", "2", "--upstream-burst", "1", "--queue-timeout", "5000",
                "--queue-limit", "2", "--ttl", "60", "--upstream-retries", "0")
    h.sim_reset(sim)
    assert h.contacts(g.port, "days=24").status == 200  # the token
    q1 = raw_send(g.port, "days=25")
    time.sleep(0.05)
    q2 = raw_send(g.port, "days=26")
    time.sleep(0.1)
    r, took = timed(h.contacts, g.port, "days=27")  # a third in the queue: full
    rate_limited(r, limit="queue_full")
    assert took < 0.5 * h.SLOW, took
    assert raw_read_status(q1, 5 * h.SLOW) == 200
    assert raw_read_status(q2, 5 * h.SLOW) == 200
    queries = [x["query"] for x in stats()["recent"]]
    assert queries == ["days=24", "days=25", "days=26"], queries
    done(g)


@run.test
def upstream_concurrency_caps_requests_in_progress():
    g = gateway("--upstream-rate", "1000", "--upstream-burst", "1000",
                "--upstream-concurrency", "2", "--queue-timeout", str(10000 * h.SLOW),
                "--ttl", "60", "--upstream-retries", "0")
    h.sim_reset(sim)
    h.sim_latency(sim, 300)
    try:
        calls = [h.Background(lambda d=d: h.contacts(g.port, "days=%d" % d, timeout=20))
                 for d in range(31, 39)]
        answers = [c.result(20) for c in calls]
    finally:
        h.sim_latency(sim, 0)
    assert [r.status for r in answers] == [200] * 8, answers
    st = stats()
    assert st["total"] == 8 and st["max_concurrency"] <= 2, st["max_concurrency"]
    done(g)


@run.test
def a_queued_miss_is_refused_at_its_deadline():
    # a token is there but the only concurrency slot is busy: it queues, and
    # is refused when --queue-timeout runs out, neither at once nor later
    g = gateway("--upstream-rate", "100", "--upstream-burst", "100",
                "--upstream-concurrency", "1", "--queue-timeout", "400", "--ttl", "60",
                "--upstream-retries", "0")
    h.sim_reset(sim)
    h.sim_latency(sim, 1500 if not WRAPPED else 4000)
    try:
        slow = h.Background(lambda: h.contacts(g.port, "days=39", timeout=30))
        h.eventually(lambda: stats()["in_flight"] == 1, what="the slow fetch started")
        r, took = timed(h.contacts, g.port, "days=40")
        rate_limited(r, limit="queue_timeout")
        assert 0.35 <= took < 1.2 * h.SLOW, "refused after %.2fs (queue timeout 400 ms)" % took
        assert slow.result(30).status == 200
    finally:
        h.sim_latency(sim, 0)
    assert h.sim_total(sim) == 1
    done(g)


@run.test
def vendor_429_blocks_only_its_key_for_retry_after():
    RA = 2 if not WRAPPED else 4
    g = gateway("--upstream-rate", "100", "--upstream-burst", "100", "--ttl", "1",
                "--upstream-retries", "0", "--breaker-threshold", "5")
    h.sim_reset(sim)
    stored = h.contacts(g.port, "days=41")
    assert stored.status == 200
    time.sleep(1.1)  # expired
    h.sim_fault(sim, "429", retry_after=RA, key=h.KEY_A)
    ref = vendor("days=42")  # what the vendor sends with that fault
    assert ref.status == 429 and ref.header("retry-after") == str(RA), ref.headers
    h.sim_fault(sim, "429", retry_after=RA, key=h.KEY_A)
    r = h.contacts(g.port, "days=42")
    blocked_at = time.time()
    assert r.status == 429 and r.body == ref.body, ("the vendor's 429 relayed", r)
    assert r.header("retry-after") == str(RA), r.headers
    assert r.header("content-type") == ref.header("content-type")
    base_a = count_a()
    base_b = stats()["by_key"].get(h.KEY_B, 0)
    # the stored answer stands in for the blocked key
    stale(h.contacts(g.port, "days=41"), "upstream-rate-limited", stored.body)
    i = 0
    while time.time() < blocked_at + RA - 0.5:
        i += 1
        rate_limited(h.contacts(g.port, "days=%d" % (42 + i)), hi=RA, limit="vendor_429")
        rb = h.contacts(g.port, "days=%d" % (42 + i), key=h.KEY_B)  # not blocked
        assert rb.status == 200 and "fwd=miss" in rb.header("cache-status"), rb
        time.sleep(0.1)
    assert i >= 2, "too slow to observe the block"
    st = stats()
    assert st["by_key"].get(h.KEY_A, 0) == base_a, "a request of the blocked key went upstream"
    assert st["by_key"].get(h.KEY_B, 0) == base_b + i
    time.sleep(max(0.0, blocked_at + RA + 0.3 - time.time()))
    r = h.contacts(g.port, "days=42")
    assert r.status == 200 and r.body == vendor("days=42").body, r
    assert count_a() == base_a + 2  # the request, and our reference
    # the requests that were waiting for the fetch (coalesced) get the vendor's 429 too
    h.sim_latency(sim, 300)
    h.sim_fault(sim, "429", retry_after=1, key=h.KEY_C)
    try:
        calls = [h.Background(lambda: h.contacts(g.port, "days=49", key=h.KEY_C))
                 for _ in range(5)]
        answers = [c.result(10) for c in calls]
    finally:
        h.sim_latency(sim, 0)
    assert stats()["by_key"].get(h.KEY_C, 0) == 1
    for r in answers:
        assert r.status == 429 and r.header("retry-after") == "1", r
        assert r.json().get("statusCode") == 429, ("the vendor's body", r)
    done(g)


@run.test
def vendor_429_http_date_and_rate_limit_headers_relayed():
    stub = Stub()
    g = gateway("--upstream-rate", "100", "--upstream-burst", "100", "--ttl", "60",
                "--upstream-retries", "0", upstream_port=stub.port)
    try:
        until = [0.0]

        def dated():
            until[0] = int(time.time()) + (3 if not WRAPPED else 5)
            return 429, [("Retry-After", email.utils.formatdate(until[0], usegmt=True)),
                         ("X-RateLimit-Limit", "100"), ("X-RateLimit-Remaining", "0"),
                         ("x-ratelimit-reset", "3"), ("RateLimit-Limit", "100"),
                         ("RateLimit-Remaining", "0"), ("RateLimit-Reset", "3")]

        stub.plan[h.KEY_A] = [dated]
        r = h.contacts(g.port, "days=1")
        assert r.status == 429, r
        assert r.header("retry-after") == email.utils.formatdate(until[0], usegmt=True), \
            r.headers
        for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset",
                     "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
            assert r.header(name) is not None, ("%s not relayed" % name, r.headers)
        assert r.header("x-ratelimit-remaining") == "0"
        assert stub.n(h.KEY_A) == 1
        seen = 0
        while time.time() < until[0] - 0.6:
            rate_limited(h.contacts(g.port, "days=2"), hi=5)
            assert h.contacts(g.port, "days=2", key=h.KEY_B).status == 200
            seen += 1
            time.sleep(0.2)
        assert seen >= 2, "too slow to observe the block"
        assert stub.n(h.KEY_A) == 1, "a request of the blocked key went upstream"
        time.sleep(max(0.0, until[0] + 0.3 - time.time()))
        r = h.contacts(g.port, "days=2")
        assert r.status == 200 and r.body == b"[]", r
        assert stub.n(h.KEY_A) == 2
        # without Retry-After: blocked for 30 s
        stub.plan[h.KEY_C] = [lambda: (429, [])]
        assert h.contacts(g.port, "days=3", key=h.KEY_C).status == 429
        rate_limited(h.contacts(g.port, "days=4", key=h.KEY_C), hi=30)
        assert int(h.contacts(g.port, "days=4", key=h.KEY_C).header("retry-after")) >= 25
        assert stub.n(h.KEY_C) == 1
        done(g)
    finally:
        stub.stop()


@run.test
def retries_of_503_each_cost_a_request():
    g = gateway("--upstream-rate", "100", "--upstream-burst", "100", "--ttl", "60",
                "--upstream-retries", "2", "--retry-backoff", "50", "--breaker-threshold", "0")
    h.sim_reset(sim)
    h.sim_fault(sim, "status", status=503, count=2)
    r = h.contacts(g.port, "days=51")
    assert h.sim_total(sim) == 3
    assert r.status == 200 and r.body == vendor("days=51").body, r
    h.sim_reset(sim)
    h.sim_fault(sim, "status", status=503, count=5)
    r = h.contacts(g.port, "days=52")
    assert h.sim_total(sim) == 3
    h.sim_clear_faults(sim)
    assert r.status == 503 and r.json() == {"statusCode": 503, "message": "injected fault"}, r
    # 502 and 504 are retried too; 500 is not
    for code in (502, 504):
        h.sim_reset(sim)
        h.sim_fault(sim, "status", status=code, count=1)
        r = h.contacts(g.port, "days=%d" % (50 + code % 100))
        assert r.status == 200 and h.sim_total(sim) == 2, (code, r, h.sim_total(sim))
    h.sim_reset(sim)
    h.sim_fault(sim, "status", status=500, count=1)
    r = h.contacts(g.port, "days=55")
    assert r.status == 500 and h.sim_total(sim) == 1, r
    # a truncated answer is retried
    h.sim_reset(sim)
    h.sim_fault(sim, "truncated", count=1)
    r = h.contacts(g.port, "days=56")
    assert r.status == 200 and h.sim_total(sim) == 2, r
    done(g)

    g = gateway("--upstream-rate", "100", "--upstream-burst", "100", "--ttl", "60",
                "--upstream-retries", "0", "--breaker-threshold", "0")
    h.sim_reset(sim)
    h.sim_fault(sim, "status", status=503, count=2)
    r = h.contacts(g.port, "days=57")
    assert r.status == 503 and h.sim_total(sim) == 1, r
    h.sim_clear_faults(sim)
    done(g)

    # no token, no retry: the only token went to the first attempt
    g = gateway("--upstream-rate", "0.5", "--upstream-burst", "1", "--ttl", "60",
                "--upstream-retries", "2", "--retry-backoff", "50", "--breaker-threshold", "0")
    h.sim_reset(sim)
    h.sim_fault(sim, "status", status=503, count=2)
    r = h.contacts(g.port, "days=58")
    time.sleep(0.3)
    assert r.status == 503 and h.sim_total(sim) == 1, (r, h.sim_total(sim))
    h.sim_clear_faults(sim)
    done(g)


@run.test
def breaker_opens_serves_stale_or_503_probes_and_closes():
    COOL = 1000 if not WRAPPED else 3000
    g = gateway("--breaker-threshold", "3", "--breaker-cooldown", str(COOL),
                "--upstream-retries", "0", "--upstream-rate", "100", "--upstream-burst", "100",
                "--ttl", "1")
    h.sim_reset(sim)
    # vendor 429s are not failures: three of them leave the breaker closed
    for i in range(3):
        h.sim_fault(sim, "429", retry_after=0)
        assert h.contacts(g.port, "days=60&limit=%d" % (i + 1)).status == 429
        time.sleep(0.01)
    stored = h.contacts(g.port, "days=61")
    assert stored.status == 200, ("breaker opened by 429s?", stored)
    time.sleep(1.1)  # days=61 expired
    h.sim_reset(sim)
    h.sim_fault(sim, "status", status=500, count=0)
    try:
        for d in (62, 63, 64):
            assert h.contacts(g.port, "days=%d" % d).status == 500
        opened = time.time()
        assert h.sim_total(sim) == 3
        r, took = timed(h.contacts, g.port, "days=65")
        h.json_error(r, 503, "upstream_unavailable")
        retry_after(r, 1, COOL // 1000)
        assert took < 0.5 * h.SLOW, took
        stale(h.contacts(g.port, "days=61"), "breaker-open", stored.body)
        assert h.sim_total(sim) == 3, "the open breaker let a request through"
        assert time.time() < opened + COOL / 1000.0, "too slow to observe the open breaker"
        # after the cool-down: one probe (of three concurrent misses, the
        # others 503 at once); it fails, the breaker reopens
        time.sleep(max(0.0, opened + COOL / 1000.0 + 0.3 - time.time()))
        h.sim_latency(sim, 300)
        first = h.Background(lambda: h.contacts(g.port, "days=66"))
        h.eventually(lambda: h.sim_total(sim) == 4, what="the probe reached the simulator")
        others = [h.contacts(g.port, "days=%d" % d) for d in (166, 167)]
        assert first.result(10).status == 500
        h.sim_latency(sim, 0)
        reopened = time.time()
        for r in others:
            h.json_error(r, 503, "upstream_unavailable")
        assert h.sim_total(sim) == 4, "more than one probe"
        h.json_error(h.contacts(g.port, "days=67"), 503, "upstream_unavailable")
        assert h.sim_total(sim) == 4
    finally:
        h.sim_clear_faults(sim)
    time.sleep(max(0.0, reopened + COOL / 1000.0 + 0.3 - time.time()))
    r = h.contacts(g.port, "days=67")  # the probe succeeds: closed
    assert r.status == 200 and h.sim_total(sim) == 5, r
    for d in (68, 69):
        r = h.contacts(g.port, "days=%d" % d)
        assert r.status == 200 and "fwd=miss" in r.header("cache-status"), r
    assert h.sim_total(sim) == 7
    done(g)


@run.test
def a_queued_client_that_leaves_costs_no_upstream_request():
    g = gateway("--upstream-rate", "1", "--upstream-burst", "1", "--queue-timeout", "5000",
                "--queue-limit", "10", "--ttl", "60", "--upstream-retries", "0")
    h.sim_reset(sim)
    assert h.contacts(g.port, "days=71").status == 200  # the token
    quitters = [raw_send(g.port, "days=%d" % d) for d in (72, 73, 74)]
    time.sleep(0.2)
    for s in quitters:
        s.close()
    left = time.time()
    time.sleep(1.5)
    # (the first quitter's turn came at ~1 s: its client was gone)
    st = stats()
    assert st["total"] == 1, [x["query"] for x in st["recent"]]
    assert time.time() - left < 3 * h.SLOW
    # the queue still works: one that stays is served when its token comes
    r = h.contacts(g.port, "days=75")
    assert r.status == 200, r
    stay = raw_send(g.port, "days=76")
    assert raw_read_status(stay, 5 * h.SLOW) == 200
    assert [x["query"] for x in stats()["recent"]] == ["days=71", "days=75", "days=76"]
    done(g)


@run.test
def a_noisy_caller_cannot_use_up_the_key():
    g = gateway("--caller-header", "x-client-id", "--caller-rate", "1", "--caller-burst", "1",
                "--upstream-rate", "100", "--upstream-burst", "100", "--queue-timeout", "300",
                "--ttl", "60", "--upstream-retries", "0")
    h.sim_reset(sim)

    def get(q, caller):
        return h.contacts(g.port, q, headers={"x-client-id": caller} if caller else None)

    assert get("days=81", "noisy").status == 200
    hit = get("days=81", "noisy")  # a hit costs nothing
    assert hit.status == 200 and "hit" in hit.header("cache-status"), hit
    ra = rate_limited(get("days=82", "noisy"), hi=2, limit="caller_quota")
    assert h.sim_total(sim) == 1
    r = get("days=83", "quiet")
    assert r.status == 200 and r.body == vendor("days=83").body, r
    assert get("days=84", None).status == 200  # no caller header: the key's bucket only
    time.sleep(ra)
    assert get("days=82", "noisy").status == 200  # its own bucket refilled
    done(g)


def caller_get(g, q, caller, timeout=20):
    t0 = time.time()
    r = h.contacts(g.port, q, headers={"x-client-id": caller}, timeout=timeout)
    return r, time.time() - t0


@run.test
def a_quiet_caller_is_not_queued_behind_a_noisy_one():
    # noisy's queued misses wait for noisy's own token; the key has 100/s to
    # spare and quiet's bucket is full: quiet's miss should go at once
    g = gateway("--caller-header", "x-client-id", "--caller-rate", "1", "--caller-burst", "1",
                "--upstream-rate", "100", "--upstream-burst", "100", "--queue-timeout", "3000",
                "--queue-limit", "64", "--ttl", "60", "--upstream-retries", "0")
    h.sim_reset(sim)
    assert caller_get(g, "days=91", "noisy")[0].status == 200
    queued = [h.Background(lambda d=d: caller_get(g, "days=%d" % d, "noisy")) for d in (92, 93)]
    time.sleep(0.2)  # both queued (they need noisy's tokens at ~1 s and ~2 s)
    r, took = caller_get(g, "days=94", "quiet")
    for b in queued:
        nr, _ = b.result(20)
        assert nr.status == 200, nr
    assert r.status == 200, r
    order = [x["query"] for x in stats()["recent"]]
    # quiet needs no token that is missing: it goes before noisy's queued ones
    assert order.index("days=94") < order.index("days=92"), (
        "quiet waited %.2fs, behind noisy's queued requests (the per-key FIFO holds it "
        "although only noisy's caller token is missing); upstream order %s" % (took, order))
    done(g)


@run.test
def a_noisy_caller_cannot_fill_the_keys_queue():
    # queue-timeout 1500: noisy's 2nd miss (its token in 1 s) may queue; its
    # 3rd and 4th (2 s, 3 s) cannot be served in time: 429 at once. quiet,
    # with its own tokens and the key's, is served.
    g = gateway("--caller-header", "x-client-id", "--caller-rate", "1", "--caller-burst", "1",
                "--upstream-rate", "100", "--upstream-burst", "100", "--queue-timeout", "1500",
                "--queue-limit", "3", "--ttl", "60", "--upstream-retries", "0")
    h.sim_reset(sim)
    assert caller_get(g, "days=95", "noisy")[0].status == 200
    noisy = []
    for d in (96, 97, 98):
        noisy.append(h.Background(lambda d=d: caller_get(g, "days=%d" % d, "noisy")))
        time.sleep(0.05)
    time.sleep(0.1)
    quiet, _ = caller_get(g, "days=99", "quiet")
    answers = [b.result(20) for b in noisy]
    problems = []
    if quiet.status != 200:
        problems.append("quiet got %d %r (the key's queue was full of noisy's requests)"
                        % (quiet.status, quiet.body[:60]))
    if answers[0][0].status != 200 and not WRAPPED:
        problems.append("noisy's 2nd miss: %r" % answers[0][0])
    for (r, took), need in zip(answers[1:] if not WRAPPED else [], (2, 3)):
        if r.status != 429 or took > 0.5 * h.SLOW:
            problems.append("noisy's miss needing its token in %d s (queue timeout 1.5 s): "
                            "%d after %.2fs, Retry-After %s; want 429 at once"
                            % (need, r.status, took, r.header("retry-after")))
        elif int(r.header("retry-after")) < 2:
            problems.append("noisy's miss needing %d s: Retry-After %s"
                            % (need, r.header("retry-after")))
    assert not problems, "; ".join(problems)
    done(g)


@run.test
def clean_exit():
    for g in list(GATEWAYS):
        done(g)
    assert sim.stop() == 0, sim.tail()


run.run()
