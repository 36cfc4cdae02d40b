"""The vendor simulator on its own: the contract (auth, validation, filters,
ordering, paging, determinism, canonical spellings), the control API (stats,
latency, every fault kind) and the command line.

Self-contained, Python 3 standard library only. Run as
    python3 tests/integration/test_sim.py --gateway PATH --sim PATH
(--gateway is accepted and ignored). Every HTTP call has a timeout; every
simulator started is killed at the end. Prints one line per test and a final
`N passed, M failed`; exits non-zero on any failure.
"""
import argparse
import calendar
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

NOW = "2026-01-01T00:00:00Z"
NOW_MS = calendar.timegm((2026, 1, 1, 0, 0, 0)) * 1000
DAY_MS = 86400000
CONTACTS = 500
KEY_A, KEY_B, KEY_C = "sim-key-alpha", "sim-key-bravo", "sim-key-charlie"
TIMEOUT = 10
PATH = "/api/public/contacts"
ALL = "created_after=1970-01-01"  # every contact, ascending created_at
FIELDS = ["id", "name", "phone", "email", "platform", "last_message_at", "chat_status",
          "created_at", "updated_at", "client_id", "ai_customer_id", "default_stage_id",
          "blocked", "is_chat_read", "active_ticket_v2"]
PLATFORMS = {"whatsapp", "web-whatsapp", "instagram", "webchat", "sms", "messenger",
             "tiktok", "voice", "playground"}
UUID_RE = re.compile(r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-8][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}"
                     r"-[0-9a-fA-F]{12}|00000000-0000-0000-0000-000000000000|"
                     r"ffffffff-ffff-ffff-ffff-ffffffffffff)$")
TIME_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z$")

_procs = []
_tmp = tempfile.mkdtemp(prefix="cg-sim-")


# ---- processes ----

class Sim:
    """A started simulator; .port once it listens."""

    def __init__(self, path, *extra, contacts=CONTACTS, now=NOW):
        self.log = os.path.join(_tmp, "sim-%d.log" % len(_procs))
        self.logf = open(self.log, "wb")
        self.p = subprocess.Popen([path, "--listen", "127.0.0.1:0", "--now", now,
                                   "--contacts", str(contacts)] + list(extra),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=self.logf)
        _procs.append(self)
        deadline = time.time() + 20
        while time.time() < deadline:
            m = re.search(r"listening on (\S+):(\d+)", self.read_log())
            if m:
                self.port = int(m.group(2))
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError("simulator did not start: " + self.read_log()[-2000:])

    def read_log(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Signals and waits; returns the exit code (SIGKILL if it hangs)."""
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        self.logf.close()
        return self.p.returncode


def kill_all():
    for s in _procs:
        if s.p.poll() is None:
            s.p.kill()
            s.p.wait(timeout=5)
        if not s.logf.closed:
            s.logf.close()


# ---- HTTP ----

class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body)


def request(port, path, headers=None, method="GET", timeout=TIMEOUT, conn=None):
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, body)
    finally:
        if own:
            conn.close()


def raw_get(port, query, key=KEY_A):
    """One GET with Connection: close on a fresh socket, the answer parsed by
    hand (http.client folds repeated headers): (status, [(name, value)] in
    order with lower-case names, body bytes as sent, up to the close)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        s.sendall(("GET %s?%s HTTP/1.1\r\nHost: sim\r\nx-api-key: %s\r\n"
                   "Connection: close\r\n\r\n" % (PATH, query, key)).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(n.strip().lower(), v.strip()) for n, _, v in
               (line.partition(":") for line in lines[1:])]
    return status, headers, body


def values(headers, name):
    """Every value of header `name` in a raw_get header list, in order."""
    return [v for n, v in headers if n == name]


def get(port, query, key=KEY_A, **kw):
    h = {} if key is None else {"x-api-key": key}
    return request(port, PATH + ("?" + query if query is not None else ""), h, **kw)


def ok(port, query, key=KEY_A):
    r = get(port, query, key)
    assert r.status == 200, (query, r.status, r.body[:300])
    assert r.header("content-type") == "application/json; charset=utf-8", r.headers
    return r


def contacts(port, query, key=KEY_A):
    return ok(port, query, key).json()


def post(port, path, expect=200):
    r = request(port, path, method="POST")
    assert r.status == expect, (path, r.status, r.body)
    return r


def stats(port):
    r = request(port, "/__sim/stats")
    assert r.status == 200, r.status
    return r.json()


def ms(ts):
    m = TIME_RE.match(ts)
    assert m, ts
    y, mo, d, hh, mi, ss, mmm = (int(g) for g in m.groups())
    return calendar.timegm((y, mo, d, hh, mi, ss)) * 1000 + mmm


def iso(t_ms):
    s, r = divmod(t_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%03dZ" % r


def ids(cs):
    return [c["id"] for c in cs]


# ---- the tests ----

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


A = argparse.ArgumentParser()
A.add_argument("--gateway")
A.add_argument("--sim", required=True)
ARGS = A.parse_args()
S = None      # the main simulator
FULL = {}     # key -> every contact, ascending created_at
ORGS = None   # /__sim/orgs


def setup():
    global S, ORGS
    S = Sim(ARGS.sim)
    for k in (KEY_A, KEY_B):
        FULL[k] = contacts(S.port, ALL, k)
    ORGS = request(S.port, "/__sim/orgs").json()


@test
def unauthorised():
    for key in (None, "", "sim-key-nope", KEY_A.upper(), KEY_A[:-1], KEY_A + "x"):
        r = get(S.port, "days=30", key)
        assert r.status == 401, (key, r.status)
        assert r.header("content-type").startswith("application/json")
        assert r.json() == {"statusCode": 401, "message": "Invalid or missing API key"}, r.body


@test
def bad_requests():
    bad = {
        "": "days", "limit=5": "days", "offset=3": "days",
        "days=0": "days", "days=366": "days", "days=365.5": "days", "days=365.0001": "days",
        "days=0.99": "days", "days=abc": "days", "days=-5": "days", "days=1e2": "days",
        "days=7.": "days", "days=.5": "days", "days=+7": "days", "days=": "days", "days": "days",
        "days=3&days=3": "days", "days=3&d%61ys=4": "days",
        "days=3&limit=0": "limit", "days=3&limit=1001": "limit", "days=3&limit=10.5": "limit",
        "days=3&limit=x": "limit", "days=3&limit=": "limit",
        "days=3&offset=-1": "offset", "days=3&offset=2147483648": "offset",
        "days=3&offset=1.5": "offset",
        "created_after=2024-02-30": "created_after",
        "created_after=2023-02-29": "created_after",
        "created_after=2024-01-15T10:00": "created_after",
        "created_after=2024-01-15T24:00Z": "created_after",
        "created_after=2024-01-15T10:00:00+02": "created_after",
        "created_after=2024-13-01": "created_after",
        "created_after=yesterday": "created_after",
        "updated_after=2024-01-15T10:00:00.Z": "updated_after",
        "updated_after=2024-01-15T10:00:60Z": "updated_after",
        "days=3&stage_id=not-a-uuid": "stage_id",
        "days=3&stage_id=3c6eb192-ff93-9bc3-8b67-6966dfc84e40": "stage_id",
        "days=3&pipeline_id=3c6eb192-ff93-4bc3-cb67-6966dfc84e40": "pipeline_id",
        "days=3&custom_field_key=tier": "custom_field",
        "days=3&custom_field_value=gold": "custom_field",
        "days=3&custom_field_key=&custom_field_value=gold": "custom_field_key",
        "days=3&entity_type=contact": "entity_type",
        "days=3&entity_type=Ticket": "entity_type",
        "days=3%zz": "percent", "days=3&foo=%4": "percent", "days=3&x%0=1": "percent",
        "days=3%00": "percent", "days=3&custom_field_key=a%00b&custom_field_value=x": "percent",
    }
    for q, what in bad.items():
        r = get(S.port, q)
        assert r.status == 400, (q, r.status, r.body[:200])
        assert r.header("content-type").startswith("application/json"), q
        b = r.json()
        assert b["statusCode"] == 400 and b["error"] == "Bad Request", (q, b)
        assert what in b["message"], (q, what, b["message"])
    for q in ("days=1", "days=365", "days=365.000", "days=7.5", "days=3&limit=1000",
              "days=3&limit=10.0", "days=3&offset=2147483647", "days=3&offset=0",
              "created_after=2024-02-29", "updated_after=2024-01-15T10:00:00.123456789Z",
              "created_after=2024-01-15T10:00-03:00", "created_after=2024-01-15T10:00:00%2B0530",
              "days=3&stage_id=00000000-0000-0000-0000-000000000000",
              "days=3&pipeline_id=FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
              "days=3&entity_type=customer", "days=3&unknown=%41&&&=x&y"):
        ok(S.port, q)


@test
def shape_of_the_data():
    for key, cs in FULL.items():
        assert len(cs) == CONTACTS, len(cs)
        assert len({c["id"] for c in cs}) == CONTACTS
        assert len({c["client_id"] for c in cs}) == 1
        nulls = {f: 0 for f in ("phone", "email", "ai_customer_id", "default_stage_id",
                                "active_ticket_v2", "current_stage_id")}
        for c in cs:
            assert list(c.keys()) == FIELDS, list(c.keys())
            for f in ("id", "client_id"):
                assert UUID_RE.match(c[f]), c[f]
            for f in ("ai_customer_id", "default_stage_id"):
                assert c[f] is None or UUID_RE.match(c[f]), c[f]
            for f in ("phone", "email", "ai_customer_id", "default_stage_id",
                      "active_ticket_v2"):
                nulls[f] += c[f] is None
            assert c["platform"] in PLATFORMS and isinstance(c["name"], str) and c["name"]
            assert c["chat_status"] in ("UNATTENDED", "ATTENDED", "CLOSED")
            assert isinstance(c["blocked"], bool) and isinstance(c["is_chat_read"], bool)
            t = c["active_ticket_v2"]
            if t is not None:
                assert list(t.keys()) == ["id", "current_stage_id"] and UUID_RE.match(t["id"])
                nulls["current_stage_id"] += t["current_stage_id"] is None
            cr, up, lm = ms(c["created_at"]), ms(c["updated_at"]), ms(c["last_message_at"])
            assert NOW_MS - 400 * DAY_MS <= cr <= up <= NOW_MS, c
            assert cr <= lm <= NOW_MS, c
        assert {c["platform"] for c in cs} == PLATFORMS
        for f, n in nulls.items():
            assert 0 < n < CONTACTS, (f, n)
        assert len({ms(c["created_at"]) % 1000 for c in cs}) > 100  # millisecond variety
        assert any(not c["name"].isascii() for c in cs)  # UTF-8 names


@test
def org_description():
    assert set(ORGS) == {KEY_A, KEY_B, KEY_C}, ORGS.keys()
    for key, cs in FULL.items():
        o = ORGS[key]
        assert o["client_id"] == cs[0]["client_id"] and o["contacts"] == CONTACTS
        assert len(o["pipelines"]) == 3 and all(len(p["stages"]) == 4 for p in o["pipelines"])
        stages = {s for p in o["pipelines"] for s in p["stages"]}
        for c in cs:
            t = c["active_ticket_v2"]
            if t and t["current_stage_id"]:
                assert t["current_stage_id"] in stages
            assert c["default_stage_id"] is None or c["default_stage_id"] in stages


@test
def determinism():
    q = "days=365&limit=300&offset=7"
    a = ok(S.port, q).body
    assert ok(S.port, q).body == a
    other = Sim(ARGS.sim)
    try:
        for key in (KEY_A, KEY_B):
            assert ok(other.port, ALL, key).body == ok(S.port, ALL, key).body
        assert ok(other.port, q).body == a
        assert request(other.port, "/__sim/orgs").body == request(S.port, "/__sim/orgs").body
    finally:
        assert other.stop() == 0
    # a key's organisation depends on its text, not on its position in --keys
    alone = Sim(ARGS.sim, "--keys", KEY_B)
    reseeded = Sim(ARGS.sim, "--seed", "43")
    try:
        assert ok(alone.port, ALL, KEY_B).body == ok(S.port, ALL, KEY_B).body
        assert get(alone.port, ALL, KEY_A).status == 401
        assert ok(reseeded.port, ALL).body != ok(S.port, ALL).body
    finally:
        assert alone.stop() == 0 and reseeded.stop() == 0


@test
def equivalent_spellings_identical_bytes():
    stage = next(c["active_ticket_v2"]["current_stage_id"] for c in FULL[KEY_A]
                 if c["active_ticket_v2"] and c["active_ticket_v2"]["current_stage_id"])
    groups = [
        ["days=30", "days=030", "days=30.0", "days=30.000000000", "d%61ys=30", "days=3%30",
         "&days=30&", "days=30&zz=1&yy", "days=30&entity_type=ticket"],
        ["days=30&limit=10", "limit=10&days=30", "days=030&limit=010.0", "days=30&limit=1%30"],
        ["days=365&stage_id=" + stage, "days=365&stage_id=" + stage.upper(),
         "stage_id=" + stage.upper().replace("A", "a") + "&days=365.0"],
        ["created_after=2025-06-15T12:00:00%2B02:00", "created_after=2025-06-15T10:00:00.000Z",
         "created_after=2025-06-15T10:00Z", "created_after=2025-06-15T10:00:00.0009Z",
         "created_after=2025-06-15T05:00:00-05:00", "created_after=2025-06-15T15:30:00%2B0530"],
        ["updated_after=2025-06-15", "updated_after=2025-06-15T00:00:00Z",
         "updated_after=2025-06-14T21:00:00-03:00"],
        ["days=365&custom_field_key=region&custom_field_value=New%20York",
         "days=365&custom_field_key=region&custom_field_value=New+York",
         "days=365&custom_field_value=New+York&custom_field_key=%72egion"],
        ["days=365&custom_field_key=region&custom_field_value=S%C3%A3o+Paulo",
         "days=365&custom_field_key=region&custom_field_value=S%c3%a3o%20Paulo"],
    ]
    for g in groups:
        bodies = {ok(S.port, q).body for q in g}
        assert len(bodies) == 1, g
        assert len(json.loads(bodies.pop())) > 0, g


@test
def days_filter_and_order():
    for days in ("30", "7.5", "365", "1"):
        got = contacts(S.port, "days=" + days)
        since = NOW_MS - int(float(days) * DAY_MS)
        want = [c for c in FULL[KEY_A] if ms(c["last_message_at"]) >= since]
        want.sort(key=lambda c: (-ms(c["last_message_at"]), c["id"]))
        assert ids(got) == ids(want), days
        assert got == want
    assert len(contacts(S.port, "days=30")) < len(contacts(S.port, "days=365")) < CONTACTS


@test
def created_after_cursor():
    full = FULL[KEY_A]
    assert [ms(c["created_at"]) for c in full] == sorted(ms(c["created_at"]) for c in full)
    for i in (0, 100, 250, 499):
        cursor = full[i]["created_at"]
        got = contacts(S.port, "created_after=" + cursor)
        assert all(ms(c["created_at"]) > ms(cursor) for c in got)
        assert ids(got) == ids([c for c in full if ms(c["created_at"]) > ms(cursor)])
        # one millisecond earlier: strictly after, so the cursor contact comes back
        got2 = contacts(S.port, "created_after=" + iso(ms(cursor) - 1))
        assert got2[0]["id"] == full[i]["id"] and got2[1:] == got
    assert contacts(S.port, "created_after=2026-01-01T00:00:00Z") == []


@test
def updated_after_cursor_and_paging():
    full = sorted(FULL[KEY_A], key=lambda c: (ms(c["updated_at"]), c["id"]))
    cursor = full[200]["updated_at"]
    want = [c for c in full if ms(c["updated_at"]) > ms(cursor)]
    got = contacts(S.port, "updated_after=" + urllib.parse.quote(cursor))
    assert ids(got) == ids(want) and len(got) == 299
    # updated_after orders even when created_after is also given
    both = contacts(S.port, "created_after=2025-01-01&updated_after=" + cursor)
    assert ids(both) == [c["id"] for c in want if ms(c["created_at"]) > ms("2025-01-01T00:00:00.000Z")]
    # an incremental sync: page by offset, everything exactly once, in order
    seen, off = [], 0
    while True:
        page = contacts(S.port, "updated_after=2024-01-01&limit=64&offset=%d" % off)
        seen += page
        off += len(page)
        if len(page) < 64:
            break
    assert ids(seen) == ids(full)


@test
def limit_offset_slices():
    for base in ("days=365", ALL, "updated_after=2025-03-01"):
        whole = contacts(S.port, base)
        for limit, offset in ((1, 0), (10, 0), (10, 5), (7, 300), (1000, 0), (50, len(whole) - 3),
                              (5, len(whole)), (5, 100000)):
            got = contacts(S.port, "%s&limit=%d&offset=%d" % (base, limit, offset))
            assert got == whole[offset:offset + limit], (base, limit, offset)
        assert contacts(S.port, base + "&offset=40") == whole[40:]


@test
def stage_and_pipeline_filters():
    for key in (KEY_A, KEY_B):
        full = contacts(S.port, "days=365", key)
        with_stage = [c for c in full if c["active_ticket_v2"] and c["active_ticket_v2"]["current_stage_id"]]
        union = []
        for p in ORGS[key]["pipelines"]:
            got = contacts(S.port, "days=365&pipeline_id=" + p["id"], key)
            assert ids(got) == [c["id"] for c in with_stage
                                if c["active_ticket_v2"]["current_stage_id"] in p["stages"]]
            assert got and ids(got) == ids(contacts(S.port, "days=365&pipeline_id=" + p["id"].upper(), key))
            union += ids(got)
            for s in p["stages"]:
                gs = contacts(S.port, "days=365&stage_id=" + s, key)
                assert ids(gs) == [c["id"] for c in with_stage
                                   if c["active_ticket_v2"]["current_stage_id"] == s]
                both = contacts(S.port, "days=365&stage_id=%s&pipeline_id=%s" % (s, p["id"]), key)
                assert both == gs
        assert sorted(union) == sorted(ids(with_stage))
        # a stage of one pipeline with another pipeline: nothing; another org's ids: nothing
        p0, p1 = ORGS[key]["pipelines"][:2]
        assert contacts(S.port, "days=365&stage_id=%s&pipeline_id=%s" % (p0["stages"][0], p1["id"]), key) == []
    other = ORGS[KEY_B]["pipelines"][0]["id"]
    assert contacts(S.port, "days=365&pipeline_id=" + other, KEY_A) == []
    # AND with the time filter
    s = ORGS[KEY_A]["pipelines"][0]["stages"][1]
    d30 = set(ids(contacts(S.port, "days=30")))
    st = contacts(S.port, "days=365&stage_id=" + s)
    assert ids(contacts(S.port, "days=30&stage_id=" + s)) == [i for i in ids(st) if i in d30]


@test
def custom_field_filters():
    vocab = {"status": ["Active", "Churned", "Trial"], "tier": ["gold", "silver", "bronze"],
             "region": ["north", "south", "S\u00e3o Paulo", "New York"]}
    full = contacts(S.port, "days=365")
    by_id = {c["id"]: c for c in full}
    order = ids(full)
    for k, values in vocab.items():
        seen = {"ticket": set(), "customer": set()}
        for v in values:
            base = "days=365&custom_field_key=%s&custom_field_value=%s" % (
                urllib.parse.quote(k), urllib.parse.quote_plus(v))
            anyr = ids(contacts(S.port, base))
            tick = ids(contacts(S.port, base + "&entity_type=ticket"))
            cust = ids(contacts(S.port, base + "&entity_type=customer"))
            assert tick and cust, (k, v)
            assert set(anyr) == set(tick) | set(cust) and anyr == [i for i in order if i in set(anyr)]
            assert set(anyr) < set(order)
            # ticket fields only exist on contacts with an active ticket
            assert all(by_id[i]["active_ticket_v2"] is not None for i in tick)
            # one value per field and entity: the values partition
            for ent, got in (("ticket", tick), ("customer", cust)):
                assert not seen[ent] & set(got), (k, v, ent)
                seen[ent] |= set(got)
    for q in ("custom_field_key=region&custom_field_value=Sao+Paulo",
              "custom_field_key=region&custom_field_value=s%C3%A3o+paulo",
              "custom_field_key=color&custom_field_value=gold",
              "custom_field_key=tier&custom_field_value=gold+"):
        assert contacts(S.port, "days=365&" + q) == [], q


@test
def two_keys_two_organisations():
    a, b = FULL[KEY_A], FULL[KEY_B]
    assert a[0]["client_id"] != b[0]["client_id"]
    assert not set(ids(a)) & set(ids(b))
    c = contacts(S.port, ALL, KEY_C)
    assert c[0]["client_id"] not in (a[0]["client_id"], b[0]["client_id"])


@test
def stats_count_everything():
    post(S.port, "/__sim/reset")
    st = stats(S.port)
    assert st["total"] == 0 and st["recent"] == [] and st["in_flight"] == 0
    assert st["by_key"] == {KEY_A: 0, KEY_B: 0, KEY_C: 0}
    get(S.port, "days=1&limit=1")
    get(S.port, "days=0", KEY_B)                  # 400
    get(S.port, "days=1", None)                   # 401
    get(S.port, "days=1", "nope")                 # 401
    get(S.port, "days=3&custom_field_value=S%C3%A3o+Paulo&x=\"q\"", KEY_C)
    request(S.port, "/elsewhere")                 # not the endpoint
    st = stats(S.port)
    assert st["total"] == 5, st
    assert st["by_key"] == {KEY_A: 1, KEY_B: 1, KEY_C: 1}, st
    assert [(r["key"], r["query"]) for r in st["recent"]] == [
        (KEY_A, "days=1&limit=1"), (KEY_B, "days=0"), ("", "days=1"), ("nope", "days=1"),
        (KEY_C, "days=3&custom_field_value=S%C3%A3o+Paulo&x=\"q\"")], st["recent"]
    assert all(abs(r["t_ms"] - time.time() * 1000) < 60000 for r in st["recent"])
    assert st["in_flight"] == 0 and st["max_concurrency"] == 1
    # the ring keeps the last 256, oldest first
    conn = http.client.HTTPConnection("127.0.0.1", S.port, timeout=TIMEOUT)
    try:
        for i in range(300):
            request(S.port, PATH + "?days=1&limit=1&n=%d" % i, {"x-api-key": KEY_A}, conn=conn)
    finally:
        conn.close()
    st = stats(S.port)
    assert st["total"] == 305 and st["by_key"][KEY_A] == 301
    assert len(st["recent"]) == 256
    assert [r["query"] for r in st["recent"]] == ["days=1&limit=1&n=%d" % i for i in range(44, 300)]
    post(S.port, "/__sim/reset")
    assert stats(S.port)["total"] == 0


@test
def keep_alive_answers_are_fast():
    # TCP_NODELAY: without it every answer on a kept-alive connection costs ~40 ms
    conn = http.client.HTTPConnection("127.0.0.1", S.port, timeout=TIMEOUT)
    try:
        get(S.port, "days=30&limit=50", conn=conn)
        t0 = time.time()
        for _ in range(20):
            r = get(S.port, "days=30&limit=50", conn=conn)
            assert r.status == 200
        took = time.time() - t0
    finally:
        conn.close()
    assert took < 0.5, took


def fault(kind, expect=200, **kw):
    q = "".join("&%s=%s" % (k, urllib.parse.quote(str(v))) for k, v in kw.items())
    post(S.port, "/__sim/fault?kind=" + kind + q, expect)


def still_serving():
    r = get(S.port, "days=30&limit=3")
    assert r.status == 200 and len(r.json()) == 3, (r.status, r.body[:200])


@test
def fault_status():
    post(S.port, "/__sim/reset")
    fault("status")
    r = get(S.port, "days=5")
    assert r.status == 500 and r.json() == {"statusCode": 500, "message": "injected fault"}
    assert r.header("content-type").startswith("application/json")
    still_serving()
    fault("status", status=503, count=2)
    assert [get(S.port, "days=5").status for _ in range(3)] == [503, 503, 200]
    # applied before validation and before the key check; counted
    fault("status", status=502, count=2)
    assert get(S.port, "days=999").status == 502
    assert get(S.port, "days=5", None).status == 502
    assert get(S.port, "days=999").status == 400
    assert stats(S.port)["total"] == 8


@test
def fault_429():
    fault("429", retry_after=7)
    r = get(S.port, "days=5")
    assert r.status == 429 and r.header("retry-after") == "7", (r.status, r.headers)
    assert r.json()["statusCode"] == 429
    fault("429")
    assert get(S.port, "days=5").header("retry-after") == "1"
    still_serving()


@test
def fault_for_one_key_and_until_cleared():
    fault("status", status=503, count=0, key=KEY_B)
    for _ in range(3):
        assert get(S.port, "days=5", KEY_B).status == 503
        assert get(S.port, "days=5", KEY_A).status == 200
    post(S.port, "/__sim/faults/clear")
    assert get(S.port, "days=5", KEY_B).status == 200
    # queued faults play in order
    fault("status", status=500)
    fault("429")
    assert [get(S.port, "days=5").status for _ in range(3)] == [500, 429, 200]
    # reset clears faults too
    fault("status", count=0)
    post(S.port, "/__sim/reset")
    still_serving()


@test
def fault_reset():
    fault("reset")
    try:
        get(S.port, "days=5")
        raise AssertionError("answered")
    except ConnectionResetError:
        pass
    still_serving()
    # with latency the reset comes after it
    post(S.port, "/__sim/latency?ms=200")
    fault("reset")
    t0 = time.time()
    try:
        get(S.port, "days=5")
        raise AssertionError("answered")
    except ConnectionResetError:
        pass
    assert time.time() - t0 >= 0.19
    post(S.port, "/__sim/latency?ms=0")
    assert stats(S.port)["in_flight"] == 0
    still_serving()


@test
def fault_hang():
    # a client that gives up first
    fault("hang", ms=1500)
    t0 = time.time()
    try:
        get(S.port, "days=5", timeout=0.4)
        raise AssertionError("answered")
    except (TimeoutError, OSError):
        pass
    assert time.time() - t0 < 1.0
    still_serving()  # the loop is not blocked
    # a client that waits: the connection closes after ms, unanswered
    fault("hang", ms=600)
    t0 = time.time()
    try:
        get(S.port, "days=5", timeout=5)
        raise AssertionError("answered")
    except (http.client.RemoteDisconnected, ConnectionResetError):
        pass
    assert 0.55 < time.time() - t0 < 3, time.time() - t0
    deadline = time.time() + 5
    while stats(S.port)["in_flight"] != 0:
        assert time.time() < deadline, stats(S.port)
        time.sleep(0.05)
    still_serving()


@test
def fault_malformed():
    fault("malformed")
    r = get(S.port, "days=5")
    assert r.status == 200 and r.header("content-type").startswith("application/json")
    try:
        json.loads(r.body)
        raise AssertionError("valid JSON: %r" % r.body)
    except ValueError:
        pass
    still_serving()


@test
def fault_truncated():
    full = ok(S.port, "days=30").body
    fault("truncated")
    conn = http.client.HTTPConnection("127.0.0.1", S.port, timeout=TIMEOUT)
    try:
        conn.request("GET", PATH + "?days=30", headers={"x-api-key": KEY_A})
        r = conn.getresponse()
        assert r.status == 200 and int(r.getheader("content-length")) == len(full)
        try:
            r.read()
            raise AssertionError("complete body")
        except http.client.IncompleteRead as e:
            assert e.partial == full[:len(full) // 2], (len(e.partial), len(full))
    finally:
        conn.close()
    still_serving()


JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"


@test
def fault_hostile_headers():
    q = "days=30&limit=3"
    full = ok(S.port, q).body
    # the real answer, with its headers damaged
    for kind, types in (("two-types", [JSON_TYPE, HTML_TYPE]),
                        ("same-types", [JSON_TYPE, JSON_TYPE]),
                        ("html-type", [HTML_TYPE])):
        fault(kind)
        status, hs, body = raw_get(S.port, q)
        assert (status, values(hs, "content-type"), body) == (200, types, full), \
            (kind, status, hs, body[:100])
        assert values(hs, "content-length") == [str(len(full))], (kind, hs)
    fault("two-lengths")
    status, hs, body = raw_get(S.port, q)
    assert status == 200 and body == full, (status, body[:100])
    assert values(hs, "content-length") == [str(len(full)), str(len(full) + 1)], hs
    assert values(hs, "content-type") == [JSON_TYPE], hs
    fault("long-type")
    status, hs, body = raw_get(S.port, q)
    types = values(hs, "content-type")
    assert status == 200 and body == full and len(types) == 1, (status, hs)
    assert len(types[0]) == 300 and types[0].startswith(JSON_TYPE + "; x=aaa"), types
    # the key check still happens: a bad key's 401 gets the damaged headers
    fault("two-types")
    status, hs, body = raw_get(S.port, q, key="sim-key-nope")
    assert status == 401 and values(hs, "content-type") == [JSON_TYPE, HTML_TYPE], (status, hs)
    assert json.loads(body)["statusCode"] == 401
    still_serving()


@test
def fault_hostile_statuses():
    q = "days=30&limit=3"
    full = ok(S.port, q).body
    fault("302")
    status, hs, body = raw_get(S.port, q)
    assert status == 302 and values(hs, "location") == [PATH + "?" + q], (status, hs)
    assert json.loads(body) == {"statusCode": 302, "message": "Found"}, body
    fault("302-bare")
    status, hs, body = raw_get(S.port, q)
    assert status == 302 and values(hs, "location") == [], (status, hs)
    for kind, code in (("304", 304), ("204", 204)):
        fault(kind)
        status, hs, body = raw_get(S.port, q)
        assert (status, body, values(hs, "content-type")) == (code, b"", []), (kind, status, hs)
    fault("999")
    status, hs, body = raw_get(S.port, q)
    assert (status, body, values(hs, "content-type")) == (999, full, [JSON_TYPE]), (status, hs)
    # http.client reads them too (what a kept-alive client sees next stays in step)
    conn = http.client.HTTPConnection("127.0.0.1", S.port, timeout=TIMEOUT)
    try:
        for kind, code in (("304", 304), ("204", 204), ("302", 302), ("999", 999)):
            fault(kind)
            assert get(S.port, q, conn=conn).status == code, kind
            assert get(S.port, q, conn=conn).body == full, kind
    finally:
        conn.close()
    # latency delays them like every answer
    post(S.port, "/__sim/latency?ms=200")
    fault("302-bare")
    t0 = time.time()
    status, hs, body = raw_get(S.port, q)
    assert status == 302 and time.time() - t0 >= 0.19, (status, time.time() - t0)
    post(S.port, "/__sim/latency?ms=0")
    assert stats(S.port)["in_flight"] == 0
    still_serving()


@test
def fault_control_errors():
    for q in ("kind=nope", "", "kind=status&status=200", "kind=status&status=600",
              "kind=status&count=-1", "kind=status&count=x", "kind=hang&ms=1.5",
              "kind=429&retry_after=-1", "kind=hang&ms=999999999", "kind=status&key=",
              "kind=%zz", "kind=two_types", "kind=303"):
        r = request(S.port, "/__sim/fault?" + q, method="POST")
        assert r.status == 400, (q, r.status)
        assert r.json()["statusCode"] == 400
    for q in ("ms=-1", "ms=x", "", "ms=600001"):
        assert request(S.port, "/__sim/latency?" + q, method="POST").status == 400, q
    assert request(S.port, "/__sim/fault?kind=status", method="GET").status == 405
    assert request(S.port, "/__sim/nope", method="POST").status == 404
    assert stats(S.port)["in_flight"] == 0
    still_serving()  # none of those queued a fault


@test
def other_paths_and_methods():
    r = request(S.port, "/api/public/contact?days=1", {"x-api-key": KEY_A})
    assert r.status == 404 and r.json()["statusCode"] == 404
    assert request(S.port, "/", {"x-api-key": KEY_A}).status == 404
    for m in ("POST", "PUT", "DELETE", "PATCH"):
        r = request(S.port, PATH + "?days=1", {"x-api-key": KEY_A}, method=m)
        assert r.status == 405, (m, r.status)


@test
def latency_delays_and_overlaps():
    post(S.port, "/__sim/reset")
    post(S.port, "/__sim/latency?ms=300")
    t0 = time.time()
    r = get(S.port, "days=5&limit=1")
    assert r.status == 200 and 0.28 < time.time() - t0 < 2
    # errors are delayed too
    t0 = time.time()
    assert get(S.port, "days=0").status == 400 and time.time() - t0 > 0.28
    # concurrent requests overlap: the loop never blocks
    results = []

    def one():
        results.append(get(S.port, "days=5&limit=2").status)

    threads = [threading.Thread(target=one) for _ in range(5)]
    t0 = time.time()
    for t in threads:
        t.start()
    time.sleep(0.1)
    mid = stats(S.port)
    for t in threads:
        t.join(timeout=TIMEOUT)
    took = time.time() - t0
    assert results == [200] * 5, results
    assert took < 1.0, took
    assert mid["in_flight"] == 5, mid
    assert stats(S.port)["max_concurrency"] == 5 and stats(S.port)["in_flight"] == 0
    post(S.port, "/__sim/latency?ms=0")
    t0 = time.time()
    still_serving()
    assert time.time() - t0 < 0.2
    post(S.port, "/__sim/latency?ms=300")
    post(S.port, "/__sim/reset")  # clears latency
    t0 = time.time()
    still_serving()
    assert time.time() - t0 < 0.2


@test
def command_line():
    for bad in (["--bogus"], ["--seed"], ["--seed", "x"], ["--contacts", "100001"],
                ["--contacts", "-1"], ["--listen", "127.0.0.1"], ["--listen", "127.0.0.1:70000"],
                ["--now", "2026-02-30"], ["--now", "soon"], ["--keys", "a,,b"], ["--keys", "a,a"],
                ["--keys", ",".join("k%d" % i for i in range(17))], ["--latency-ms", "x"],
                ["--listen=127.0.0.1:0"]):
        p = subprocess.run([ARGS.sim] + bad, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=TIMEOUT)
        assert p.returncode == 2, (bad, p.returncode)
        err = p.stderr.decode()
        assert err.count("\n") == 1 and "contacts-sim" in err, (bad, err)
    p = subprocess.run([ARGS.sim, "--help"], capture_output=True, timeout=TIMEOUT)
    assert p.returncode == 0 and b"--listen" in p.stdout
    # epoch seconds, custom keys, CLI latency, SIGINT
    s = Sim(ARGS.sim, "--keys", "k1,k2", "--latency-ms", "150", "--seed", "7",
            now=str(NOW_MS // 1000))
    try:
        t0 = time.time()
        a = ok(s.port, "days=365&limit=5", "k1")
        assert time.time() - t0 > 0.14
        assert get(s.port, "days=365", KEY_A).status == 401
        assert a.json() and re.search(r"listening on 127\.0\.0\.1:%d\n" % s.port, s.read_log())
    finally:
        t0 = time.time()
        assert s.stop(signal.SIGINT) == 0
        assert time.time() - t0 < 2
    s2 = Sim(ARGS.sim, "--keys", "k1,k2", "--seed", "7", "--now", "2026-01-01T00:00:00.000+00:00")
    try:
        assert ok(s2.port, "days=365&limit=5", "k1").body == a.body
    finally:
        assert s2.stop() == 0


@test
def sigterm_while_holding_requests():
    s = Sim(ARGS.sim, contacts=50)
    conns = []
    try:
        post(s.port, "/__sim/fault?kind=hang&count=0&ms=60000")
        for _ in range(3):
            c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=TIMEOUT)
            c.request("GET", PATH + "?days=5", headers={"x-api-key": KEY_A})
            conns.append(c)
        deadline = time.time() + 5
        while stats(s.port)["in_flight"] != 3:
            assert time.time() < deadline
            time.sleep(0.02)
    finally:
        t0 = time.time()
        rc = s.stop()
        for c in conns:
            c.close()
    assert rc == 0 and time.time() - t0 < 2, (rc, s.read_log())


def main():
    passed = failed = 0
    try:
        try:
            setup()
        except Exception:
            traceback.print_exc()
            print("0 passed, 1 failed", flush=True)
            return 1
        for fn in TESTS:
            t0 = time.time()
            try:
                fn()
                passed += 1
                print("PASS %s (%.2fs)" % (fn.__name__, time.time() - t0), flush=True)
            except Exception:
                failed += 1
                print("FAIL %s" % fn.__name__, flush=True)
                traceback.print_exc()
                print("--- sim log (tail) ---\n" + S.read_log()[-2000:], flush=True)
        rc = S.stop()
        if rc != 0:
            failed += 1
            print("FAIL clean exit: sim exited %s" % rc, flush=True)
    finally:
        kill_all()
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
