"""Derived answers on the real gateway (issue 13), and the client no-cache
policies that must not defeat them.

Every derived body is compared byte for byte with the simulator's own answer
to the same question, asked directly of the same simulator with the same key
(those direct asks are subtracted from the simulator's request count), and
the count proves that no upstream request was spent on it:

- pages: offset/limit slices of a stored window, the clipped last page and
  `[]` past the end of a complete S (|S| < L), and an exactly full S that
  cannot answer past its end (upstream, not_inside);
- cursors: updated_after T2 > T1 (between elements and on an element's own
  timestamp) with limit/offset, from a complete S and from a full one;
  created_after;
- days: on a simulator whose --now is the wall clock at its start (the
  gateway cuts a derived `days` answer at S's real fetch time), with days
  values chosen from S's body so that no contact's last_message_at lies
  near the cut; the derived TTL is Q's own class when shorter than S's;
- the second ask is a plain hit still saying detail=derived; Age and ttl are
  S's; the ETag is the one the vendor's own bytes get (a gateway without
  derive fetching the same question); never across keys; never from a stale
  S, nor from one older than Q's own TTL; off by default; `--derive pages`
  does not use the cursors rule; a restart on the same cache directory
  rebuilds the index; SIGHUP with a config file turns derive on (and off);
  metrics exact (derived by rule, misses by reason, requests cache="derived"
  then "hit"); If-None-Match with the vendor's ETag on the first (derived)
  ask is a 304; gzip on the second ask; HEAD;
- --client-no-cache: revalidate (young: a hit, 304 on If-None-Match; older
  than --no-cache-min-age: one upstream refresh, ETag unchanged, and a 304
  from the refresh), Pragma: no-cache alike, Pragma ignored when a
  Cache-Control field is present, honour (always upstream), ignore (never),
  a refresh our own rate limit refuses answered by the fresh stored answer;
  offset=0 is the question without offset (one upstream request).

Each case asks its own questions (or runs its own gateway), so the cases are
independent. About 20 s.
"""
import gzip
import json
import os
import re
import signal
import time
from datetime import datetime, timezone

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a)                      # clock fixed at h.NOW
NOW_W = int(time.time())                  # the wall clock, for the days rule
simw = h.Proc([a.sim, "--listen", "127.0.0.1:0", "--now", str(NOW_W),
               "--contacts", "500"], "sim-wall")
# pages and cursors only: on this simulator (clock fixed at h.NOW, months
# before the wall clock) a days-rule answer would be cut at the wall clock,
# not at the simulator's; the days rule runs on gww and its own gateways
gw = h.start_gateway(a, sim.port, "--derive", "pages,cursors")
plain = h.start_gateway(a, sim.port)      # no --derive: the vendor's bytes' ETags
gww = h.start_gateway(a, simw.port, "--derive", "all", "--ttl", "60", "--ttl-wide", "600")
run.watch(gw, gww)
WORK = h.tmpdir("derive")

ORGS = h.sim_orgs(sim)
PIPE_A = ORGS[h.KEY_A]["pipelines"][0]["id"]
PIPE_A2 = ORGS[h.KEY_A]["pipelines"][1]["id"]
_direct = {}                              # sim port -> requests asked directly


def direct(s, q, key=h.KEY_A):
    """The simulator's own answer to q (asked directly, not counted)."""
    _direct[s.port] = _direct.get(s.port, 0) + 1
    r = h.contacts(s.port, q, key)
    assert r.status == 200, (q, r)
    return r.body


def upstream(s=sim):
    """Requests the simulator got from gateways (direct asks subtracted)."""
    return h.sim_total(s) - _direct.get(s.port, 0)


def get(q, key=h.KEY_A, g=None, **kw):
    return h.contacts((g or gw).port, q, key, **kw)


def status(r):
    return r.header("cache-status") or ""


def field(r, name):
    """An integer parameter of Cache-Status (ttl=N)."""
    for part in status(r).split(";"):
        part = part.strip()
        if part.startswith(name + "="):
            return int(part[len(name) + 1:])
    raise AssertionError("no %s in %r" % (name, status(r)))


def is_derived(r, rule):
    cs = status(r)
    return (r.status == 200 and cs.startswith("contacts-gateway; hit; ttl=")
            and cs.endswith("; detail=derived; rule=" + rule))


def assert_derived(q, rule, key=h.KEY_A, g=None, s=sim, times=2):
    """q is answered by `rule` without an upstream request, byte for byte
    the simulator's answer, `times` times (the later ones plain hits of the
    stored derived entry, still saying detail=derived). Returns the first."""
    before = upstream(s)
    first = None
    for i in range(times):
        r = get(q, key, g)
        assert is_derived(r, rule), (q, i, r.status, status(r))
        first = first or r
        assert r.body == first.body and r.header("etag") == first.header("etag"), q
    assert upstream(s) == before, "%s: %d upstream request(s)" % (q, upstream(s) - before)
    want = direct(s, q, key)
    assert first.body == want, "%s: derived %d bytes, vendor %d" % (q, len(first.body), len(want))
    return first


def assert_upstream(q, key=h.KEY_A, g=None, s=sim):
    """q goes upstream once (a miss), and is the simulator's answer."""
    before = upstream(s)
    r = get(q, key, g)
    assert r.status == 200 and "fwd=miss" in status(r), (q, status(r))
    assert upstream(s) == before + 1, (q, upstream(s) - before)
    assert r.body == direct(s, q, key), q
    return r


def metrics(port):
    """{(name, frozenset(labels)): value} of /metrics."""
    r = h.request(port, "/metrics")
    assert r.status == 200, r
    out = {}
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        if "{" in series:
            name, rest = series.split("{", 1)
            labels = frozenset((k, v.strip('"')) for k, v in
                               (kv.split("=", 1) for kv in rest[:-1].split(",")))
        else:
            name, labels = series, frozenset()
        out[(name, labels)] = float(value)
    return out


def val(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0.0)


REASONS = ("different_filters", "no_limit", "rule_off", "not_inside", "days_inexact",
           "malformed", "missing_field", "bad_time", "unsorted", "no_source", "stale_source")


def derive_counts(port):
    m = metrics(port)
    return ({r: val(m, "contacts_gateway_derived_total", rule=r)
             for r in ("pages", "cursors", "days")},
            {r: val(m, "contacts_gateway_derive_misses_total", reason=r) for r in REASONS}, m)


def ms_of(ts):
    """Epoch ms of the simulator's YYYY-MM-DDTHH:MM:SS.mmmZ."""
    d = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return int(round(d.timestamp() * 1000))


def iso(ms):
    d = datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


# ---- pages ----

@run.test
def pages_slices_of_a_stored_window_are_the_vendors_bytes():
    assert_upstream("days=201&limit=300")
    for q in ("days=201&limit=100", "days=201&limit=100&offset=100",
              "days=201&offset=250&limit=50", "days=201&limit=10&offset=290",
              "days=201&limit=13&offset=37", "limit=1&days=201&offset=299"):
        r = assert_derived(q, "pages")
        # the ETag the vendor's own bytes get (a gateway without derive)
        p = get(q, g=plain)
        assert p.body == r.body and p.header("etag") == r.header("etag"), q


@run.test
def pages_clipped_last_page_and_past_the_end_of_a_complete_answer():
    s = assert_upstream("days=202&pipeline_id=%s&limit=1000" % PIPE_A)
    n = len(s.json())
    assert 20 < n < 1000, n                # complete: |S| < L
    r = assert_derived("days=202&pipeline_id=%s&limit=100&offset=%d" % (PIPE_A, n - 7),
                       "pages")
    assert len(r.json()) == 7               # clipped where the list ends
    r = assert_derived("days=202&pipeline_id=%s&limit=100&offset=%d" % (PIPE_A, n), "pages")
    assert r.body == b"[]"
    assert assert_derived("days=202&pipeline_id=%s&limit=5&offset=900" % PIPE_A,
                          "pages").body == b"[]"


@run.test
def an_exactly_full_page_cannot_answer_past_its_end():
    assert_upstream("days=203&limit=50&offset=50")      # |S| == L: not complete
    assert_derived("days=203&limit=10&offset=90", "pages")  # ends exactly at its end
    assert_upstream("days=203&limit=10&offset=91")      # one past it: the vendor
    assert_upstream("days=203&limit=10&offset=40")      # o < O: the vendor


# ---- cursors ----

@run.test
def cursors_later_updated_after_from_a_complete_answer():
    t1 = "2025-10-01T00:00:00.000Z"
    s = assert_upstream("updated_after=%s&limit=1000" % t1).json()
    assert 20 < len(s) < 1000, len(s)
    on = s[len(s) // 3]["updated_at"]                   # exactly an element's time
    between = iso(ms_of(s[len(s) // 2]["updated_at"]) - 1)
    for q in ("updated_after=%s&limit=1000" % on,
              "updated_after=%s&limit=20&offset=5" % on,
              "updated_after=%s&limit=7" % between,
              "updated_after=%s&limit=100&offset=%d" % (between, len(s) // 2 - 3),
              "updated_after=%s&limit=10" % s[-1]["updated_at"]):   # [] past the last
        assert_derived(q, "cursors")
    assert_upstream("updated_after=2025-09-30T00:00:00.000Z&limit=10")  # T2 < T1


@run.test
def cursors_from_a_full_answer_only_when_enough_lie_past_t2():
    t1 = "2025-08-01T00:00:00.000Z"
    s = assert_upstream("updated_after=%s&limit=100" % t1).json()
    assert len(s) == 100
    t2 = s[59]["updated_at"]                           # 40 elements past it in S
    assert_derived("updated_after=%s&limit=40" % t2, "cursors")
    assert_derived("updated_after=%s&limit=30&offset=10" % t2, "cursors")
    assert_upstream("updated_after=%s&limit=41" % t2)   # the 41st may follow S


@run.test
def cursors_created_after():
    s = assert_upstream("created_after=2025-09-15T00:00:00Z&limit=1000").json()
    assert 20 < len(s) < 1000, len(s)
    t2 = s[len(s) // 4]["created_at"]
    assert_derived("created_after=%s&limit=30" % t2, "cursors")
    assert_derived("created_after=%s&limit=30&offset=30" % t2, "cursors")


# ---- days (the wall-clock simulator) ----

def safe_days(body, fetched_lo_ms, fetched_hi_ms, candidates, margin_ms=120000):
    """The candidates d for which no element of S has last_message_at near
    either cut: the simulator's (--now - d) and the gateway's (S's fetch
    time - d), with S fetched within [lo, hi]."""
    times = [ms_of(c["last_message_at"]) for c in json.loads(body)]
    out = []
    for d in candidates:
        lo = NOW_W * 1000 - int(d * 86400000) - margin_ms
        hi = fetched_hi_ms - int(d * 86400000) + margin_ms
        if not any(lo <= t <= hi for t in times):
            out.append(d)
    return out


@run.test
def days_prefix_of_a_wider_days_answer_and_q_own_ttl_class():
    t0 = int(time.time() * 1000)
    s = assert_upstream("days=120&limit=1000", g=gww, s=simw)
    t1 = int(time.time() * 1000)
    n = len(s.json())
    assert 50 < n < 1000, n
    days = safe_days(s.body, t0, t1 + 60000, [3, 7, 10, 14, 21, 30, 45, 60, 100, 7.5])
    assert len(days) >= 4, days
    for d in [d for d in days if d < 90][:3]:
        d = ("%g" % d)
        r = assert_derived("days=%s&limit=1000" % d, "days", g=gww, s=simw)
        assert len(r.json()) < n
        assert_derived("days=%s&limit=5&offset=2" % d, "days", g=gww, s=simw)
        # --ttl 60 for Q, S's (wide, days >= 90) --ttl-wide 600: Q's is shorter
        assert 55 <= field(r, "ttl") <= 60, status(r)
    wide = [d for d in days if d >= 90]
    if wide:
        r = assert_derived("days=%g&limit=20" % wide[0], "days", g=gww, s=simw)
        assert field(r, "ttl") > 500, status(r)        # both wide: S's own
    assert_upstream("days=121&limit=10", g=gww, s=simw)  # Q.days > S.days


# ---- freshness, keys, defaults ----

@run.test
def age_and_ttl_are_the_sources():
    assert_upstream("days=204&limit=100")
    time.sleep(2.1)
    r = assert_derived("days=204&limit=10&offset=10", "pages")
    s = get("days=204&limit=100")
    assert "hit" in status(s)
    assert int(r.header("age")) >= 2, r.header("age")
    assert abs(int(r.header("age")) - int(s.header("age"))) <= 1, (r.headers, s.headers)
    assert abs(field(r, "ttl") - field(s, "ttl")) <= 1, (status(r), status(s))


@run.test
def never_across_keys():
    a_s = assert_upstream("days=205&limit=100", key=h.KEY_A)
    before_b = h.sim_stats(sim)["by_key"][h.KEY_B]
    r = assert_upstream("days=205&limit=10&offset=10", key=h.KEY_B)
    assert h.sim_stats(sim)["by_key"][h.KEY_B] == before_b + 2   # the miss and our direct ask
    mine = assert_derived("days=205&limit=10&offset=10", "pages", key=h.KEY_A)
    assert mine.body != r.body and json.loads(mine.body) == a_s.json()[10:20]


@run.test
def never_from_a_stale_answer_nor_one_older_than_q_ttl():
    g = h.start_gateway(a, simw.port, "--derive", "all", "--ttl", "1", "--ttl-wide", "600")
    pipe = h.sim_orgs(simw)[h.KEY_A]["pipelines"][0]["id"]
    try:
        assert_upstream("days=30&limit=100", g=g, s=simw)                     # ttl 1
        assert_upstream("days=200&limit=100&pipeline_id=" + pipe, g=g, s=simw)  # 600
        time.sleep(1.2)
        assert_upstream("days=30&limit=10&offset=10", g=g, s=simw)   # S expired
        # S fresh (600 s) but older than Q's own TTL (days=31: 1 s)
        assert_upstream("days=31&limit=10&pipeline_id=" + pipe, g=g, s=simw)
        assert_derived("days=200&limit=10&offset=20&pipeline_id=" + pipe, "pages",
                       g=g, s=simw)                                  # a wide Q: fine
        derived, missed, _ = derive_counts(g.port)
        want = dict.fromkeys(REASONS, 0.0)
        want.update(no_source=2, stale_source=2)
        assert missed == want, missed
        assert derived == {"pages": 1, "cursors": 0, "days": 0}, derived
    finally:
        h.stop_gateway(g)


@run.test
def off_by_default():
    assert_upstream("days=206&limit=100", g=plain)
    assert_upstream("days=206&limit=10&offset=10", g=plain)
    derived, missed, _ = derive_counts(plain.port)
    assert sum(derived.values()) == 0 and sum(missed.values()) == 0, (derived, missed)


@run.test
def derive_pages_does_not_use_the_cursors_rule():
    g = h.start_gateway(a, sim.port, "--derive", "pages")
    try:
        s = assert_upstream("updated_after=2025-10-02T00:00:00.000Z&limit=1000", g=g).json()
        assert_upstream("updated_after=%s&limit=10" % s[5]["updated_at"], g=g)
        assert_derived("updated_after=2025-10-02T00:00:00.000Z&limit=10&offset=3",
                       "pages", g=g)                       # pages on the same gateway
        derived, missed, _ = derive_counts(g.port)
        assert derived == {"pages": 1, "cursors": 0, "days": 0}, derived
        assert missed["no_source"] + missed["rule_off"] == 2, missed
    finally:
        h.stop_gateway(g)


@run.test
def a_restart_on_the_same_cache_rebuilds_the_index():
    d = h.tmpdir("restart")
    g = h.start_gateway(a, sim.port, "--derive", "all", cache_dir=d)
    assert_upstream("days=207&limit=200", g=g)
    assert_derived("days=207&limit=10", "pages", g=g)
    h.stop_gateway(g)
    g = h.start_gateway(a, sim.port, "--derive", "all", cache_dir=d)
    try:
        # S only: a derived entry is never a source
        h.eventually(lambda: re.search(r"derive: 1 stored answers indexed", g.read_log()),
                     what="the index rebuilt: " + g.tail(500))
        assert_derived("days=207&limit=10&offset=150", "pages", g=g)   # new after restart
        assert_derived("days=207&limit=10", "pages", g=g)
    finally:
        h.stop_gateway(g)


@run.test
def sighup_with_a_config_file_turns_derive_on_and_off():
    cache = h.tmpdir("hup-cache")
    conf = os.path.join(WORK, "hup.conf")
    base = ("upstream = http://127.0.0.1:%d\ncache-dir = %s\nupstream-retries = 0\n"
            "breaker-threshold = 0\nnew-key-rate = off\nunauthorized-ttl = 0\n"
            % (sim.port, cache))
    with open(conf, "w") as f:
        f.write(base)
    g = h.Proc(h.WRAP + [a.gateway, "--config", conf, "--listen", "127.0.0.1:0"], "gateway")
    try:
        assert_upstream("days=208&limit=200", g=g)
        assert_upstream("days=208&limit=10&offset=10", g=g)     # off
        with open(conf, "w") as f:
            f.write(base + "derive = all\n")
        g.signal(signal.SIGHUP)
        h.eventually(lambda: "stored answers indexed" in g.read_log(), what="reindex")
        assert "derive: 2 stored answers indexed" in g.read_log(), g.tail(800)
        assert_derived("days=208&limit=10&offset=20", "pages", g=g)
        with open(conf, "w") as f:
            f.write(base + "derive = off\n")
        g.signal(signal.SIGHUP)
        h.eventually(lambda: g.read_log().count("reload: settings from") >= 2, what="reload")
        assert_upstream("days=208&limit=10&offset=30", g=g)
    finally:
        h.stop_gateway(g)


@run.test
def metrics_are_exact():
    g = h.start_gateway(a, simw.port, "--derive", "all")
    try:
        assert_upstream("days=200&limit=100", g=g, s=simw)            # no_source 1
        assert_derived("days=200&limit=10&offset=20", "pages", g=g, s=simw)
        assert_upstream("days=200&limit=10&offset=95", g=g, s=simw)   # not_inside 1
        t0 = int(time.time() * 1000)
        s = assert_upstream("updated_after=2025-01-01T00:00:00.000Z&limit=1000",
                            g=g, s=simw).json()                      # no_source 2
        assert_derived("updated_after=%s&limit=5" % s[-20]["updated_at"], "cursors",
                       g=g, s=simw)
        sd = get("days=200&limit=100", g=g)
        d = safe_days(sd.body, t0, t0 + 60000, [2, 3, 5, 7, 10, 14])[0]
        assert_derived("days=%g&limit=5" % d, "days", g=g, s=simw)
        assert_upstream("days=199", g=g, s=simw)                      # no limit: no_source 3
        derived, missed, m = derive_counts(g.port)
        assert derived == {"pages": 1, "cursors": 1, "days": 1}, derived
        want = dict.fromkeys(REASONS, 0.0)
        want.update(no_source=3, not_inside=1)
        assert missed == want, missed
        # assert_derived asked each twice: 3 derived requests, 3 + 1 (sd) hits
        assert val(m, "contacts_gateway_requests_total", code="200", cache="derived") == 3
        assert val(m, "contacts_gateway_requests_total", code="200", cache="hit") == 4
        assert val(m, "contacts_gateway_requests_total", code="200", cache="miss") == 4
    finally:
        h.stop_gateway(g)


@run.test
def gzip_on_the_second_ask_decompresses_to_the_same_bytes():
    assert_upstream("days=209&limit=300")
    q = "days=209&limit=60&offset=100"
    before = upstream()
    r1 = get(q, headers={"Accept-Encoding": "gzip"})
    assert is_derived(r1, "pages"), status(r1)
    b1 = gzip.decompress(r1.body) if r1.header("content-encoding") == "gzip" else r1.body
    r2 = get(q, headers={"Accept-Encoding": "gzip"})
    assert is_derived(r2, "pages") and r2.header("content-encoding") == "gzip", r2.headers
    plain_r = get(q)
    want = direct(sim, q)
    assert len(want) > 1400
    assert b1 == want and gzip.decompress(r2.body) == want and plain_r.body == want
    assert r2.header("etag") == plain_r.header("etag")[:-1] + '-gzip"', (r2.headers, plain_r.headers)
    assert upstream() == before


@run.test
def if_none_match_on_the_first_derived_ask_is_304():
    assert_upstream("days=216&limit=100")
    q = "days=216&limit=10&offset=30"
    etag = get(q, g=plain).header("etag")      # the vendor's bytes' ETag
    before = upstream()
    r = get(q, headers={"If-None-Match": etag})
    assert r.status == 304 and r.body == b"", r
    assert status(r).startswith("contacts-gateway; hit; ttl=") and \
        status(r).endswith("; detail=derived; rule=pages"), status(r)
    assert r.header("etag") == etag and r.header("age") is not None
    assert upstream() == before
    assert val(metrics(gw.port), "contacts_gateway_requests_total", code="304",
               cache="derived") >= 1


@run.test
def head_of_a_derivable_question():
    assert_upstream("days=210&limit=200")
    q = "days=210&limit=25&offset=75"
    before = upstream()
    r = h.request(gw.port, h.PATH + "?" + q, {"x-api-key": h.KEY_A}, method="HEAD")
    assert r.status == 200 and r.body == b"" and is_derived(r, "pages"), (r, status(r))
    want = direct(sim, q)
    assert int(r.header("content-length")) == len(want), r.headers
    g2 = assert_derived(q, "pages")
    assert g2.header("etag") == r.header("etag")
    assert upstream() == before


# ---- client no-cache ----

NC = {"Cache-Control": "no-cache"}
FETCH = {"Cache-Control": "no-cache", "Pragma": "no-cache"}   # what Node's fetch adds


@run.test
def revalidate_young_is_a_hit_and_304():
    r = assert_upstream("days=211&limit=5")
    before = upstream()
    n = get("days=211&limit=5", headers=NC)
    assert n.status == 200 and "hit" in status(n) and n.body == r.body, status(n)
    c = get("days=211&limit=5", headers=dict(FETCH, **{"If-None-Match": r.header("etag")}))
    assert c.status == 304 and c.header("etag") == r.header("etag"), (c, c.headers)
    assert upstream() == before


def bypass(port):
    m = metrics(port)
    return sum(v for (name, labels), v in m.items()
               if name == "contacts_gateway_requests_total" and ("cache", "bypass") in labels)


@run.test
def revalidate_older_than_min_age_refreshes_once():
    g = h.start_gateway(a, sim.port, "--no-cache-min-age", "1")
    try:
        r = assert_upstream("days=212&limit=5", g=g)
        etag = r.header("etag")
        time.sleep(1.1)
        before = upstream()
        n = get("days=212&limit=5", g=g, headers=NC)
        assert n.status == 200 and "fwd=request" in status(n), status(n)
        assert n.header("etag") == etag and n.body == r.body
        assert upstream() == before + 1
        assert "hit" in status(get("days=212&limit=5", g=g, headers=NC))  # young again
        assert upstream() == before + 1
        assert bypass(g.port) == 1
        time.sleep(1.1)
        c = get("days=212&limit=5", g=g, headers=dict(FETCH, **{"If-None-Match": etag}))
        assert c.status == 304 and c.body == b"" and c.header("etag") == etag, (c, c.headers)
        assert "fwd=request" in status(c), status(c)
        assert upstream() == before + 2
        # Pragma alone is no-cache (no Cache-Control field)
        time.sleep(1.1)
        p = get("days=212&limit=5", g=g, headers={"Pragma": "no-cache"})
        assert p.status == 200 and "fwd=request" in status(p), status(p)
        assert upstream() == before + 3
        p = get("days=212&limit=5", g=g, headers={"Pragma": "no-cache"})
        assert "hit" in status(p), status(p)
        # ... but not when a Cache-Control field is present
        time.sleep(1.1)
        p = get("days=212&limit=5", g=g,
                headers={"Pragma": "no-cache", "Cache-Control": "max-age=600"})
        assert "hit" in status(p), status(p)
        assert upstream() == before + 3
        assert bypass(g.port) == 3
    finally:
        h.stop_gateway(g)


@run.test
def a_revalidation_is_derived_from_a_young_source_not_from_an_old_one():
    # --client-no-cache revalidate: a no-cache question is answered from a
    # stored answer younger than --no-cache-min-age; deriving it from such a
    # source is the same promise. Older sources: refreshed upstream.
    g = h.start_gateway(a, sim.port, "--derive", "all", "--no-cache-min-age", "1")
    hon = h.start_gateway(a, sim.port, "--derive", "all", "--client-no-cache", "honour")
    try:
        assert_upstream("days=231&limit=100", g=g)
        before = upstream()
        r = get("days=231&limit=10&offset=20", g=g, headers=FETCH)
        assert is_derived(r, "pages"), status(r)
        assert upstream() == before and r.body == direct(sim, "days=231&limit=10&offset=20")
        time.sleep(1.1)  # the source is older than 1 s now
        r = get("days=231&limit=10&offset=40", g=g, headers=FETCH)
        assert r.status == 200 and "fwd=request" in status(r), status(r)
        assert upstream() == before + 1
        # honour: a no-cache question always goes to the vendor
        assert_upstream("days=232&limit=100", g=hon)
        before = upstream()
        r = get("days=232&limit=10&offset=20", g=hon, headers=NC)
        assert r.status == 200 and "fwd=request" in status(r), status(r)
        assert upstream() == before + 1
    finally:
        h.stop_gateway(g)
        h.stop_gateway(hon)


@run.test
def widen_pages_asks_one_wide_page_for_ten_narrow_ones():
    g = h.start_gateway(a, sim.port, "--derive", "all", "--widen-pages", "100")
    p = h.start_gateway(a, sim.port, "--derive", "cursors", "--widen-pages", "100")
    try:
        before = upstream()
        r = get("days=233&limit=10", g=g)
        assert r.status == 200 and status(r).endswith("fwd=miss; fwd-status=200; stored; "
                                                     "detail=widened"), status(r)
        assert upstream() == before + 1
        recent = h.sim_stats(sim)["recent"][-1]["query"]
        assert recent == "days=233&limit=100", recent  # the wide page went upstream
        assert r.body == direct(sim, "days=233&limit=10")
        for page in range(1, 10):  # the other nine come out of it
            q = "days=233&limit=10&offset=%d" % (page * 10)
            assert_derived(q, "pages", g=g, times=1)
        assert upstream() == before + 1
        # the wide page is a stored answer of its own, and the first page too
        assert "hit" in status(get("days=233&limit=100", g=g))
        assert "hit" in status(get("days=233&limit=10", g=g))
        assert upstream() == before + 1
        m = metrics(g.port)
        assert val(m, "contacts_gateway_widened_total") == 1
        assert val(m, "contacts_gateway_derived_total", rule="pages") == 9
        # a page at least as wide is asked as it is; no-cache refreshes too
        assert_upstream("days=234&limit=100", g=g)
        n = get("days=235&limit=10", g=g, headers={"Cache-Control": "no-cache"})
        assert "detail=widened" not in status(n), status(n)
        # without the pages rule there is nothing to cut the page out with
        assert_upstream("days=236&limit=10", g=p)
        # (the last one is assert_upstream's own direct ask)
        assert h.sim_stats(sim)["recent"][-2]["query"] == "days=236&limit=10"
    finally:
        h.stop_gateway(g)
        h.stop_gateway(p)


@run.test
def honour_refreshes_every_time_and_ignore_never():
    g = h.start_gateway(a, sim.port, "--client-no-cache", "honour")
    i = h.start_gateway(a, sim.port, "--client-no-cache", "ignore", "--no-cache-min-age", "0")
    try:
        r = assert_upstream("days=213&limit=5", g=g)
        before = upstream()
        for k in range(3):
            n = get("days=213&limit=5", g=g, headers=FETCH if k else NC)
            assert n.status == 200 and "fwd=request" in status(n), status(n)
        c = get("days=213&limit=5", g=g, headers=dict(FETCH, **{"If-None-Match": r.header("etag")}))
        assert c.status == 304, c
        assert upstream() == before + 4
        assert bypass(g.port) == 4
        r = assert_upstream("days=213&limit=5", g=i)
        time.sleep(1.1)
        before = upstream()
        for hdrs in (NC, FETCH, {"Pragma": "no-cache"}):
            n = get("days=213&limit=5", g=i, headers=hdrs)
            assert n.status == 200 and "hit" in status(n), status(n)
        c = get("days=213&limit=5", g=i, headers=dict(FETCH, **{"If-None-Match": r.header("etag")}))
        assert c.status == 304, c
        assert upstream() == before and bypass(i.port) == 0
    finally:
        h.stop_gateway(g)
        h.stop_gateway(i)


@run.test
def a_refresh_our_rate_limit_refuses_is_answered_by_the_fresh_stored_answer():
    g = h.start_gateway(a, sim.port, "--no-cache-min-age", "1", "--upstream-rate", "0.001",
                        "--upstream-burst", "1", "--queue-timeout", "0", "--new-key-rate",
                        "off", protect=True)
    try:
        r = assert_upstream("days=215&limit=5", g=g)
        time.sleep(1.1)
        before = upstream()
        n = get("days=215&limit=5", g=g, headers=NC)
        assert n.status == 200 and n.body == r.body, n
        assert status(n).startswith("contacts-gateway; hit;") and "rate-limited" in status(n)
        c = get("days=215&limit=5", g=g, headers=dict(FETCH, **{"If-None-Match": r.header("etag")}))
        assert c.status == 304 and c.header("etag") == r.header("etag"), (c, c.headers)
        assert upstream() == before
    finally:
        h.stop_gateway(g)


@run.test
def offset_zero_is_no_offset():
    before = upstream()
    r1 = get("days=214&limit=10&offset=0")
    r2 = get("days=214&limit=10")
    r3 = get("offset=00&limit=10&days=214")
    assert "fwd=miss" in status(r1) and "hit" in status(r2) and "hit" in status(r3)
    assert r1.body == r2.body == r3.body == direct(sim, "days=214&limit=10")
    assert upstream() == before + 1
    last = h.sim_stats(sim)["recent"][-2]["query"]   # [-1] is our direct ask
    assert "offset" not in last, last


run.run()
