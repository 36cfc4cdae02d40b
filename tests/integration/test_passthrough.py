"""The gateway as a faithful pass-through of GET /api/public/contacts.

For varied queries over two keys (days, created_after/updated_after cursors
paged with limit/offset, stage and pipeline ids taken from the simulator's own
data, custom field pairs with a space and a non-ASCII value, entity_type, both
orderings) the gateway's answer (status, Content-Type, body bytes) equals the
simulator's direct answer byte for byte, and the simulator receives the
canonical query of policy/query.h. Equivalent spellings give the same bytes
and one canonical query upstream; unknown parameters are dropped and named in
X-Gateway-Ignored-Parameters; the key reaches the vendor; HEAD, the vendor's
401, keep-alive and 50 concurrent requests.

The gateway runs with --ttl 0 when it has a cache, so every request goes
upstream and the simulator sees it.
"""
import threading
import time

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a, contacts=2000)
NO_CACHE = ["--ttl", "0"] if "--ttl" in h.gateway_options(a) else []
gw = h.start_gateway(a, sim.port, *NO_CACHE)
run.watch(gw, sim)
ORGS = h.sim_orgs(sim)


def direct(query, key=h.KEY_A, **kw):
    return h.contacts(sim.port, query, key, **kw)


def via(query, key=h.KEY_A, **kw):
    return h.contacts(gw.port, query, key, **kw)


def last_upstream():
    """(key, raw query) of the last request that reached the simulator."""
    recent = h.sim_stats(sim)["recent"]
    assert recent, "the simulator saw nothing"
    return recent[-1]["key"], recent[-1]["query"]


def ts(t):
    """A timestamp as it appears in a canonical query (':' escaped)."""
    return t.replace(":", "%3A")


def same_answer(query, key=h.KEY_A, canonical=None, direct_query=None):
    """Asks the gateway, checks what reached the simulator, asks the simulator
    directly, and asserts status, Content-Type and body are identical.
    Returns the gateway's Response."""
    g = via(query, key)
    k, q = last_upstream()
    assert k == key, (query, "upstream saw key", k)
    if canonical is not None:
        assert q == canonical, (query, "upstream saw", q, "want", canonical)
    d = direct(direct_query if direct_query is not None else q, key)
    assert d.status == 200, (query, d)
    assert g.status == d.status, (query, "gateway", g, "direct", d)
    assert g.header("content-type") == d.header("content-type"), \
        (query, g.header("content-type"), d.header("content-type"))
    assert g.body == d.body, (query, "bodies differ", len(g.body), len(d.body))
    return g


def table(key):
    """(query as sent, canonical query expected upstream) for one key; the
    ids come from the simulator's own data (/__sim/orgs)."""
    org = ORGS[key]
    p0, p1, p2 = (p["id"] for p in org["pipelines"])
    s0 = org["pipelines"][0]["stages"][0]
    s1 = org["pipelines"][1]["stages"][2]
    s2 = org["pipelines"][2]["stages"][3]
    c1 = "2025-06-01T00:00:00.000Z"
    u1 = "2025-10-01T00:00:00.000Z"
    u2 = "2025-12-15T08:30:00.000Z"
    rows = [
        ("days=1", None), ("days=7", None), ("days=30", None), ("days=90", None),
        ("days=365", None), ("days=7.5", None), ("days=1.25", None),
        ("days=30&limit=10", None), ("days=30&limit=10&offset=10", None),
        ("days=365&limit=1000", None), ("days=365&offset=400", None),
        ("days=365&limit=1&offset=0", "days=365&limit=1"),  # offset=0 is the default
        ("created_after=" + c1, "created_after=" + ts(c1)),
        ("created_after=%s&limit=50" % c1, "created_after=%s&limit=50" % ts(c1)),
        ("created_after=%s&limit=50&offset=50" % c1,
         "created_after=%s&limit=50&offset=50" % ts(c1)),
        ("limit=100&updated_after=" + u1, "limit=100&updated_after=" + ts(u1)),
        ("limit=100&offset=100&updated_after=" + u1,
         "limit=100&offset=100&updated_after=" + ts(u1)),
        ("updated_after=" + u2, "updated_after=" + ts(u2)),
        ("created_after=%s&updated_after=%s" % (c1, u1),
         "created_after=%s&updated_after=%s" % (ts(c1), ts(u1))),
        ("days=30&created_after=2025-12-01T00:00:00.000Z",
         "created_after=2025-12-01T00%3A00%3A00.000Z&days=30"),
        ("days=365&pipeline_id=" + p0, None), ("days=365&pipeline_id=" + p1, None),
        ("days=365&limit=20&pipeline_id=" + p2, None),
        ("days=365&stage_id=" + s0, None), ("days=365&limit=5&stage_id=" + s1, None),
        ("days=365&pipeline_id=%s&stage_id=%s" % (p2, s2), None),
        ("limit=100&pipeline_id=%s&updated_after=%s" % (p0, u1),
         "limit=100&pipeline_id=%s&updated_after=%s" % (p0, ts(u1))),
        ("custom_field_key=status&custom_field_value=Active&days=365", None),
        ("custom_field_key=region&custom_field_value=New%20York&days=365", None),
        ("custom_field_key=region&custom_field_value=S%C3%A3o%20Paulo&days=365", None),
        ("custom_field_key=tier&custom_field_value=gold&days=365&entity_type=ticket", None),
        ("custom_field_key=tier&custom_field_value=gold&days=365&entity_type=customer", None),
        ("custom_field_key=status&custom_field_value=Trial&days=90&limit=10", None),
    ]
    return [(q, c if c is not None else q) for q, c in rows]


@run.test
def varied_queries_equal_byte_for_byte():
    bodies = set()
    non_empty = 0
    n = 0
    for key in (h.KEY_A, h.KEY_B):
        for query, canonical in table(key):
            g = same_answer(query, key, canonical)
            bodies.add(g.body)
            non_empty += g.body != b"[]"
            n += 1
    assert n >= 60, n
    assert len(bodies) > 55, "the queries should give different answers: %d" % len(bodies)
    assert non_empty > 55, non_empty


@run.test
def filters_from_real_data_select_what_they_name():
    for key in (h.KEY_A, h.KEY_B):
        org = ORGS[key]
        pipe = org["pipelines"][0]
        got = same_answer("days=365&pipeline_id=" + pipe["id"], key).json()
        assert got, "pipeline filter returned nothing"
        for c in got:
            assert c["active_ticket_v2"]["current_stage_id"] in pipe["stages"], c
            assert c["client_id"] == org["client_id"], c
        stage = pipe["stages"][1]
        got = same_answer("days=365&stage_id=" + stage, key).json()
        assert got and all(c["active_ticket_v2"]["current_stage_id"] == stage for c in got)
        spaced = same_answer("custom_field_key=region&custom_field_value=New%20York&days=365",
                             key).json()
        accented = same_answer(
            "custom_field_key=region&custom_field_value=S%C3%A3o%20Paulo&days=365", key).json()
        assert spaced and accented and spaced != accented


def walk(key, cursor_name, cursor, field, page=100):
    """Pages through cursor_name=cursor with limit/offset via the gateway,
    each page equal to the simulator's; returns every contact in order."""
    out = []
    for i in range(50):
        q = "limit=%d&offset=%d&%s=%s" % (page, i * page, cursor_name, cursor)
        g = same_answer(q, key)
        items = g.json()
        out += items
        if len(items) < page:
            break
    else:
        raise AssertionError("paging did not end")
    stamps = [c[field] for c in out]
    assert stamps == sorted(stamps), "%s not ascending" % field
    assert all(s > cursor for s in stamps), "not strictly after the cursor"
    assert len({c["id"] for c in out}) == len(out), "a contact on two pages"
    return out


@run.test
def cursor_sync_pages_forward_in_both_orderings():
    for key in (h.KEY_A, h.KEY_B):
        everything = direct("updated_after=2025-01-01T00:00:00.000Z", key).json()
        got = walk(key, "updated_after", "2025-01-01T00:00:00.000Z", "updated_at")
        assert [c["id"] for c in got] == [c["id"] for c in everything]
        assert len(got) > 300, len(got)
        # advance the cursor as a sync job does: only later updates come back
        cursor = got[len(got) // 2]["updated_at"]
        later = walk(key, "updated_after", cursor, "updated_at", page=1000)
        assert [c["id"] for c in later] == \
            [c["id"] for c in got if c["updated_at"] > cursor]
        got = walk(key, "created_after", "2025-03-01T00:00:00.000Z", "created_at", page=250)
        assert len(got) > 300, len(got)
    # days only: last_message_at descending
    recent = same_answer("days=30", h.KEY_A).json()
    stamps = [c["last_message_at"] for c in recent]
    assert len(stamps) > 10 and stamps == sorted(stamps, reverse=True)


SPELLINGS = [
    ("days=30&limit=10",
     ["days=30&limit=10", "limit=10&days=30", "days=030&limit=010", "days=30.0&limit=10.0",
      "days=30&&limit=1%30&", "d%61ys=30&limit=10", "days=30.000&limit=10&utm_source=x"]),
    ("days=7.5",
     ["days=7.5", "days=7.50", "days=007.500"]),
    ("limit=5&updated_after=2025-12-01T00%3A00%3A00.000Z",
     ["updated_after=2025-12-01T00:00:00.000Z&limit=5",
      "updated_after=2025-12-01T00:00:00Z&limit=5",
      "updated_after=2025-12-01T02:00:00%2B02:00&limit=5",
      "limit=5&updated_after=2025-11-30T19:00:00-05:00",
      "limit=5&updated_after=2025-11-30T19:00:00-0500",
      "updated_after=2025-12-01T00:00:00.000999Z&limit=5",
      "updated_after=2025-12-01&limit=5",
      "updated_after=2025-12-01T00%3A00%3A00.000Z&limit=5"]),
    ("custom_field_key=region&custom_field_value=New%20York&days=365&entity_type=customer",
     ["days=365&custom_field_key=region&custom_field_value=New+York&entity_type=customer",
      "entity_type=customer&custom_field_value=New%20York&custom_field_key=region&days=365",
      "days=365&custom_field_key=%72egion&custom_field_value=New%20York&entity_type=customer"]),
    ("custom_field_key=region&custom_field_value=S%C3%A3o%20Paulo&days=365",
     ["days=365&custom_field_key=region&custom_field_value=S%C3%A3o+Paulo",
      "days=365&custom_field_key=region&custom_field_value=S%c3%a3o%20Paulo"]),
]


@run.test
def equivalent_spellings_reach_the_vendor_as_one_query():
    stage = ORGS[h.KEY_A]["pipelines"][1]["stages"][0]
    groups = SPELLINGS + [("days=365&stage_id=" + stage,
                           ["days=365&stage_id=" + stage.upper(),
                            "stage_id=" + stage.upper().replace("-", "%2D") + "&days=365.0"])]
    for canonical, spellings in groups:
        bodies = set()
        for q in spellings:
            g = via(q)
            assert g.status == 200, (q, g)
            k, up = last_upstream()
            assert up == canonical, (q, "upstream saw", up, "want", canonical)
            bodies.add(g.body)
        assert len(bodies) == 1, (canonical, "spellings gave different bodies")
        assert bodies.pop() == direct(canonical).body, canonical


@run.test
def reserved_and_non_ascii_bytes_in_values_are_encoded_canonically():
    cases = [
        ("days=1&custom_field_key=k&custom_field_value=a%26b%3Dc",
         "custom_field_key=k&custom_field_value=a%26b%3Dc&days=1"),
        ("days=1&custom_field_key=k&custom_field_value=a%2Bb",
         "custom_field_key=k&custom_field_value=a%2Bb&days=1"),
        ("days=1&custom_field_key=k&custom_field_value=x*y~z!'()",
         "custom_field_key=k&custom_field_value=x%2Ay~z%21%27%28%29&days=1"),
        ("days=1&custom_field_key=k&custom_field_value=a/b?c",
         "custom_field_key=k&custom_field_value=a%2Fb%3Fc&days=1"),
        ("days=1&custom_field_key=k&custom_field_value=%E2%82%AC%f0%9f%98%80",
         "custom_field_key=k&custom_field_value=%E2%82%AC%F0%9F%98%80&days=1"),
        ("days=1&custom_field_key=a%20b&custom_field_value=-._~",
         "custom_field_key=a%20b&custom_field_value=-._~&days=1"),
    ]
    for q, canonical in cases:
        same_answer(q, canonical=canonical)


@run.test
def raw_utf8_in_the_request_target():
    req = (b"GET /api/public/contacts?days=365&custom_field_key=region&"
           b"custom_field_value=S\xc3\xa3o+Paulo HTTP/1.1\r\nHost: x\r\n"
           b"Connection: close\r\nx-api-key: " + h.KEY_A.encode() + b"\r\n\r\n")
    data, closed = h.raw_exchange(gw.port, req)
    assert h.raw_status(data) == 200, data[:300]
    want = "custom_field_key=region&custom_field_value=S%C3%A3o%20Paulo&days=365"
    assert last_upstream()[1] == want, last_upstream()
    assert data.endswith(direct(want).body)


def split_responses(data):
    """Splits pipelined HTTP/1.1 answers (each with Content-Length)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, ("incomplete answer", data[:200])
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        hdrs = dict(l.split(b":", 1) for l in lines[1:])
        hdrs = {k.strip().lower(): v.strip() for k, v in hdrs.items()}
        n = int(hdrs[b"content-length"])
        out.append((status, rest[:n]))
        data = rest[n:]
    return out


@run.test
def pipelined_requests_are_answered_in_order():
    queries = ["days=%d&limit=%d" % (i, i) for i in (3, 1, 2, 5)]
    req = b"".join(("GET %s?%s HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\n\r\n"
                    % (h.PATH, q, h.KEY_A)).encode() for q in queries)
    req += b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    data, closed = h.raw_exchange(gw.port, req)
    answers = split_responses(data)
    assert len(answers) == 5 and closed, (len(answers), closed)
    for q, (status, body) in zip(queries, answers):
        assert status == 200 and body == direct(q).body, q
    assert answers[4][0] == 200 and b'"status":"ok"' in answers[4][1]


@run.test
def unknown_parameters_dropped_and_named():
    cases = [
        ("days=7&foo=1&bar=x", "foo,bar"),
        ("zeta=1&days=7&alpha=2", "zeta,alpha"),
        ("days=7&caf%C3%A9=1", "caf%C3%A9"),
        ("days=7&flag", "flag"),
        ("days=7&entity_type=ticket", "entity_type"),  # meaningless without the pair
    ]
    for q, named in cases:
        g = via(q)
        assert g.status == 200, (q, g)
        assert g.header("x-gateway-ignored-parameters") == named, \
            (q, g.header("x-gateway-ignored-parameters"))
        assert last_upstream()[1] == "days=7", (q, last_upstream())
        assert g.body == direct("days=7").body, q
    g = via("days=7")
    assert g.header("x-gateway-ignored-parameters") is None, g.headers
    g = via("custom_field_key=tier&custom_field_value=gold&days=7&entity_type=ticket")
    assert g.header("x-gateway-ignored-parameters") is None, g.headers


@run.test
def the_key_reaches_the_vendor_and_keys_see_their_own_data():
    h.sim_reset(sim)
    answers = {}
    for key, times in ((h.KEY_A, 3), (h.KEY_B, 2), (h.KEY_C, 1)):
        for _ in range(times):
            answers[key] = via("days=365", key)
            assert answers[key].status == 200, (key, answers[key])
    st = h.sim_stats(sim)
    assert st["by_key"] == {h.KEY_A: 3, h.KEY_B: 2, h.KEY_C: 1}, st["by_key"]
    assert [r["key"] for r in st["recent"]] == [h.KEY_A] * 3 + [h.KEY_B] * 2 + [h.KEY_C]
    seen = set()
    for key, r in answers.items():
        ids = {c["client_id"] for c in r.json()}
        assert ids == {ORGS[key]["client_id"]}, (key, ids)
        seen |= ids
        assert r.body == direct("days=365", key).body
    assert len(seen) == 3
    assert answers[h.KEY_A].body != answers[h.KEY_B].body


def heads_match(g, head, what):
    assert head.status == g.status, (what, head.status, g.status)
    assert head.body == b"", (what, "HEAD has a body", head.body[:100])
    # every answer has its own request id
    hg = {k: v for k, v in g.headers.items() if k not in ("date", "x-request-id")}
    hh = {k: v for k, v in head.headers.items() if k not in ("date", "x-request-id")}
    assert head.header("x-request-id") and g.header("x-request-id"), (what, "request ids")
    assert hh == hg, (what, "HEAD headers", hh, "GET headers", hg)


@run.test
def head_gives_the_headers_of_get_and_no_body():
    for q in ("days=30", "days=30&zz=1", "updated_after=2025-12-01T00:00:00Z&limit=3"):
        g, head = via(q), via(q, method="HEAD")
        heads_match(g, head, q)
        assert int(head.header("content-length")) == len(direct(q).body)
        assert last_upstream()[1] != "", q
    # HEAD reaches the vendor as GET (the vendor itself answers HEAD with 405)
    assert direct("days=30", method="HEAD").status == 405


@run.test
def head_of_the_gateways_own_answers():
    for what, args in (("invalid", ("days=0",)), ("no key", ("days=30", None))):
        g, head = via(*args), via(*args, method="HEAD")
        heads_match(g, head, what)


@run.test
def unknown_key_gets_the_vendors_401():
    before = h.sim_stats(sim)
    g = via("days=30", key="not-a-real-key")
    after = h.sim_stats(sim)
    assert after["total"] == before["total"] + 1, "the 401 must come from the vendor"
    assert after["by_key"] == before["by_key"]
    assert after["recent"][-1]["key"] == "not-a-real-key"
    d = direct("days=30", key="not-a-real-key")
    assert (g.status, g.header("content-type"), g.body) == \
        (401, d.header("content-type"), d.body), (g, d)


@run.test
def keep_alive_many_requests_one_connection():
    conn = h.connect(gw.port)
    try:
        local = None
        for i in range(1, 61):
            if i % 10 == 3:
                r = h.request(gw.port, h.PATH + "?days=0", {"x-api-key": h.KEY_A}, conn=conn)
                assert r.status == 400, r
            elif i % 10 == 7:
                r = h.request(gw.port, "/healthz", conn=conn)
                assert r.status == 200, r
            else:
                q = "days=%d&limit=3" % i
                r = h.request(gw.port, h.PATH + "?" + q, {"x-api-key": h.KEY_A}, conn=conn)
                assert r.status == 200 and r.body == direct(q).body, (i, r)
            assert (r.header("connection") or "").lower() != "close", (i, r.headers)
            name = conn.sock.getsockname() if conn.sock else None
            assert name is not None, "the gateway closed the connection after request %d" % i
            local = local or name
            assert name == local, "http.client reconnected at request %d" % i
    finally:
        conn.close()


@run.test
def fifty_concurrent_requests_all_answered_correctly():
    queries = [((h.KEY_A, h.KEY_B)[i % 2], "days=%d&limit=%d" % (i + 1, 20 + i)) for i in range(50)]
    want = [direct(q, k).body for k, q in queries]
    h.sim_reset(sim)
    h.sim_latency(sim, 200)
    got = [None] * 50
    errors = []
    start = threading.Barrier(50, timeout=10)

    def one(i):
        try:
            start.wait()
            k, q = queries[i]
            r = via(q, k, timeout=20)
            got[i] = (r.status, r.body)
        except Exception as e:  # reported below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(50)]
    t0 = time.time()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        h.sim_latency(sim, 0)
    took = time.time() - t0
    assert not errors, errors[:5]
    bad = [i for i in range(50) if got[i] != (200, want[i])]
    assert not bad, ("wrong answers", bad[:10], [got[i] and got[i][0] for i in bad[:10]])
    st = h.sim_stats(sim)
    assert st["total"] == 50, st["total"]
    print("    50 concurrent distinct requests, upstream latency 200 ms: %.2f s, "
          "upstream max concurrency %d" % (took, st["max_concurrency"]))


@run.test
def cold_gateway_does_not_queue_concurrent_requests_behind_the_first():
    """A fresh gateway (no upstream connection yet) and a slow upstream: five
    different requests sent 0.1 s apart must each take about the upstream's
    latency, not wait for the first one's answer before going upstream."""
    cold = h.start_gateway(a, sim.port, *NO_CACHE)
    h.sim_reset(sim)
    h.sim_latency(sim, 1000)
    try:
        calls = []
        for i in range(5):
            q = "days=%d&limit=1" % (60 + i)
            t0 = time.time()
            calls.append((q, t0, h.Background(
                lambda q=q, t0=t0: (h.contacts(cold.port, q, timeout=15), time.time() - t0))))
            time.sleep(0.1)
        took = []
        for q, t0, c in calls:
            r, dt = c.result(15)
            assert r.status == 200, (q, r)
            took.append(round(dt, 2))
        st = h.sim_stats(sim)
    finally:
        h.sim_latency(sim, 0)
        h.stop_gateway(cold)
    # each should take what the first took (the upstream's 1 s plus overhead)
    assert max(took) < took[0] + 0.45, ("request latencies %s s with a 1 s upstream: requests waited "
                             "for the first upstream answer (upstream max concurrency %d)"
                             % (took, st["max_concurrency"]))


@run.test
def clean_exit():
    h.stop_gateway(gw)
    assert sim.stop() == 0, sim.tail()


run.run()
