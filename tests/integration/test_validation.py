"""Invalid requests are answered by the gateway itself and never reach the
vendor: each rule of policy/query.h with its edge values gets 400
{"error":"invalid_parameter","parameter":<name>,"message":...}; a missing or
empty x-api-key gets 401 {"error":"unauthorized","message":...}; the
simulator's request counter does not move across the whole table. The edge
values just inside each rule are accepted and forwarded. Other paths are 404,
other methods 405 with Allow: GET, HEAD; /healthz answers."""
import subprocess

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a)
gw = h.start_gateway(a, sim.port, *(["--ttl", "0"] if "--ttl" in h.gateway_options(a) else []))
run.watch(gw)

UUID = "123e4567-e89b-42d3-a456-426614174000"
LONG = "k" * 1025

# (raw query, the parameter the error must name)
INVALID = [
    # days: 1..365, plain decimal
    ("days=0", "days"), ("days=366", "days"), ("days=-1", "days"), ("days=abc", "days"),
    ("days=1e2", "days"), ("days=", "days"), ("days", "days"), ("days=1&days=2", "days"),
    ("days=1&d%61ys=2", "days"), ("days=0.5", "days"), ("days=0.0", "days"),
    ("days=365.5", "days"), ("days=365.001", "days"), ("days=+5", "days"),
    ("days=%2B5", "days"), ("days=.5", "days"), ("days=5.", "days"), ("days=1,5", "days"),
    ("days=0x10", "days"), ("days=%205", "days"), ("days=5%20", "days"),
    ("days=99999999999999999999999999", "days"), ("days=%00", "days"), ("days=1%00", "days"),
    ("days=%4", "days"), ("days=%G1", "days"), ("days=%", "days"), ("days=%C3%28", "days"),
    ("d%61ys=0", "days"),
    # limit: integer 1..1000
    ("days=1&limit=0", "limit"), ("days=1&limit=1001", "limit"), ("days=1&limit=10.5", "limit"),
    ("days=1&limit=-1", "limit"), ("days=1&limit=abc", "limit"), ("days=1&limit=", "limit"),
    ("days=1&limit", "limit"), ("days=1&limit=1e3", "limit"), ("days=1&limit=0.0", "limit"),
    ("days=1&limit=5&limit=5", "limit"), ("days=1&limit=1000.5", "limit"),
    # offset: integer 0..2147483647
    ("days=1&offset=-1", "offset"), ("days=1&offset=1.5", "offset"),
    ("days=1&offset=2147483648", "offset"), ("days=1&offset=abc", "offset"),
    ("days=1&offset=", "offset"), ("days=1&offset=99999999999999999999", "offset"),
    # timestamps: ISO 8601 date or date-time with a zone
    ("created_after=2024-13-01", "created_after"), ("created_after=2023-02-29", "created_after"),
    ("created_after=2024-01-32", "created_after"), ("created_after=2024-00-10", "created_after"),
    ("created_after=2024-1-5", "created_after"), ("created_after=15/01/2024", "created_after"),
    ("created_after=1705312800", "created_after"), ("created_after=", "created_after"),
    ("created_after=2024-01-15T10:00:00", "created_after"),
    ("created_after=2024-01-15T10:00:00.000", "created_after"),
    ("created_after=2024-01-15T25:00:00Z", "created_after"),
    ("created_after=2024-01-15T10:60:00Z", "created_after"),
    ("created_after=2024-01-15T10:00:60Z", "created_after"),
    ("created_after=2024-01-15T10:00:00X", "created_after"),
    ("created_after=2024-01-15T10:00:00Z&created_after=2024-01-16", "created_after"),
    ("updated_after=yesterday", "updated_after"), ("updated_after=", "updated_after"),
    ("updated_after=2024-01-15T25:00:00Z", "updated_after"),
    ("updated_after=2024-01-15T10:00:00", "updated_after"),
    ("updated_after=2024-02-30", "updated_after"),
    ("days=5&updated_after=now", "updated_after"),
    # UUIDs: the contract's pattern
    ("days=1&stage_id=not-a-uuid", "stage_id"), ("days=1&stage_id=" + UUID + "0", "stage_id"),
    ("days=1&stage_id=" + UUID[:-1], "stage_id"), ("days=1&stage_id=", "stage_id"),
    ("days=1&stage_id=123e4567-e89b-92d3-a456-426614174000", "stage_id"),
    ("days=1&stage_id=123e4567-e89b-02d3-a456-426614174000", "stage_id"),
    ("days=1&stage_id=123e4567-e89b-42d3-c456-426614174000", "stage_id"),
    ("days=1&stage_id=123e4567e89b42d3a456426614174000", "stage_id"),
    ("days=1&stage_id=%7B" + UUID + "%7D", "stage_id"),
    ("days=1&stage_id=g23e4567-e89b-42d3-a456-426614174000", "stage_id"),
    ("days=1&stage_id=%s&stage_id=%s" % (UUID, UUID), "stage_id"),
    ("days=1&pipeline_id=123e4567-e89b-12d3-c456-426614174000", "pipeline_id"),
    ("days=1&pipeline_id=zzz", "pipeline_id"), ("days=1&pipeline_id=", "pipeline_id"),
    # the custom field pair
    ("days=1&custom_field_key=status", "custom_field_value"),
    ("days=1&custom_field_value=Active", "custom_field_key"),
    ("days=1&custom_field_key=&custom_field_value=x", "custom_field_key"),
    ("days=1&custom_field_key=status&custom_field_value=", "custom_field_value"),
    ("days=1&custom_field_key=s&custom_field_value=%C0%AF", "custom_field_value"),
    ("days=1&custom_field_key=s&custom_field_value=%FF", "custom_field_value"),
    ("days=1&custom_field_key=s&custom_field_value=%ZZ", "custom_field_value"),
    ("days=1&custom_field_key=s&custom_field_value=a%00b", "custom_field_value"),
    ("days=1&custom_field_key=%s&custom_field_value=x" % LONG, "custom_field_key"),
    ("days=1&custom_field_key=s&custom_field_value=%s" % LONG, "custom_field_value"),
    # entity_type
    ("days=1&custom_field_key=s&custom_field_value=x&entity_type=Ticket", "entity_type"),
    ("days=1&custom_field_key=s&custom_field_value=x&entity_type=both", "entity_type"),
    ("days=1&custom_field_key=s&custom_field_value=x&entity_type=", "entity_type"),
    ("days=1&entity_type=both", "entity_type"),
    # bad bytes anywhere, also in a parameter the gateway would drop
    ("days=1&x=%00", "x"), ("days=1&x=%4", "x"), ("days=1&x=%zz", "x"), ("days=1&x=%C3", "x"),
    ("%ZZ=1&days=1", "%ZZ"), ("=%00&days=1", "query"),
    # no time filter at all
    ("", "days"), ("limit=10", "days"), ("foo=bar", "days"), ("offset=0&limit=5", "days"),
    ("stage_id=" + UUID, "days"), ("custom_field_key=a&custom_field_value=b", "days"),
    # whole-query bounds
    ("days=1&pad=" + "p" * 5000, "query"), ("&".join(["a=1"] * 70) + "&days=1", "query"),
]

# Edge values just inside the rules: accepted and forwarded, the sim's 200.
VALID_EDGES = [
    "days=1", "days=365", "days=365.0", "days=1.0", "days=0001", "days=364.999",
    "days=1&limit=1", "days=1&limit=1000", "days=1&limit=1000.0", "days=1&offset=0",
    "days=1&offset=2147483647", "created_after=2024-02-29", "created_after=2000-02-29T00:00:00Z",
    "created_after=2024-01-15T23:59:59.999Z", "updated_after=2024-01-15T10:00:00%2B14:00",
    "days=1&stage_id=00000000-0000-0000-0000-000000000000",
    "days=1&stage_id=ffffffff-ffff-ffff-ffff-ffffffffffff",
    "days=1&pipeline_id=123E4567-E89B-82D3-B456-426614174000",
    "days=1&custom_field_key=k&custom_field_value=v",
    "days=1&custom_field_key=%s&custom_field_value=%s" % ("k" * 1024, "v" * 1024),
    "=1&days=1",
]


def check_400(r, query, param):
    assert r.status == 400, (query, r)
    ct = r.header("content-type") or ""
    assert ct.startswith("application/json"), (query, ct)
    body = r.json()
    assert set(body) == {"error", "parameter", "message"}, (query, body)
    assert body["error"] == "invalid_parameter", (query, body)
    assert body["parameter"] == param, (query, "named", body["parameter"], "want", param, body)
    assert isinstance(body["message"], str) and len(body["message"]) > 5, (query, body)


@run.test
def invalid_parameters_refused_locally():
    before = h.sim_total(sim)
    wrong = []
    for query, param in INVALID:
        r = h.contacts(gw.port, query)
        try:
            check_400(r, query, param)
        except AssertionError as e:
            wrong.append(str(e))
    assert h.sim_total(sim) == before, "invalid requests reached the vendor"
    assert not wrong, "%d of %d wrong:\n      %s" % (len(wrong), len(INVALID),
                                                    "\n      ".join(wrong))


@run.test
def empty_query_after_question_mark():
    before = h.sim_total(sim)
    for path in (h.PATH + "?", h.PATH + "?&&"):
        r = h.request(gw.port, path, {"x-api-key": h.KEY_A})
        check_400(r, path, "days")
    assert h.sim_total(sim) == before


@run.test
def head_of_an_invalid_request_is_refused_locally_too():
    before = h.sim_total(sim)
    r = h.contacts(gw.port, "days=0", method="HEAD")
    assert r.status == 400 and r.body == b"", r
    r = h.contacts(gw.port, "days=1", key=None, method="HEAD")
    assert r.status == 401 and r.body == b"", r
    assert h.sim_total(sim) == before


@run.test
def edge_values_inside_the_rules_are_forwarded():
    wrong = []
    for query in VALID_EDGES:
        before = h.sim_total(sim)
        r = h.contacts(gw.port, query)
        if r.status != 200 or h.sim_total(sim) != before + 1:
            wrong.append((query, r))
    assert not wrong, wrong


def check_401(r, what):
    assert r.status == 401, (what, r)
    assert (r.header("content-type") or "").startswith("application/json"), (what, r.headers)
    body = r.json()
    assert set(body) == {"error", "message"}, (what, body)
    assert body["error"] == "unauthorized" and body["message"], (what, body)


@run.test
def missing_or_empty_key_is_401_locally():
    before = h.sim_total(sim)
    for what, headers in (("missing", {}), ("empty", {"x-api-key": ""}),
                          ("blank", {"x-api-key": " "}), ("missing + bad query", None)):
        if headers is None:
            r = h.request(gw.port, h.PATH + "?days=0")
        else:
            r = h.request(gw.port, h.PATH + "?days=1", headers)
        check_401(r, what)
    # documented in docs/configuration.md: at most 512 bytes of visible ASCII, once
    for what, key in (("inner space", "a b"), ("too long", "k" * 600)):
        check_401(h.request(gw.port, h.PATH + "?days=1", {"x-api-key": key}), what)
    conn = h.connect(gw.port)
    try:
        conn.putrequest("GET", h.PATH + "?days=1")
        conn.putheader("x-api-key", h.KEY_A)
        conn.putheader("x-api-key", h.KEY_B)
        conn.endheaders()
        resp = conn.getresponse()
        check_401(h.Response(resp.status, resp.getheaders(), resp.read()), "twice")
    finally:
        conn.close()
    assert h.sim_total(sim) == before, "requests without a usable key reached the vendor"


@run.test
def other_paths_are_404():
    before = h.sim_total(sim)
    for path in ("/", "/api/public/contact?days=1", "/api/public/contacts/x?days=1",
                 "/API/public/contacts?days=1", "/api/public", "/healthz/x",
                 "/api/public/contacts/?days=1", "/__sim/stats"):
        r = h.request(gw.port, path, {"x-api-key": h.KEY_A})
        h.json_error(r, 404, "not_found")
    assert h.sim_total(sim) == before


@run.test
def other_methods_are_405_with_allow():
    before = h.sim_total(sim)
    for m in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        body = b'{"x":1}' if m in ("POST", "PUT", "PATCH") else None
        r = h.request(gw.port, h.PATH + "?days=1", {"x-api-key": h.KEY_A}, method=m, body=body)
        h.json_error(r, 405, "method_not_allowed")
        assert r.header("allow") == "GET, HEAD", (m, r.headers)
    # the method is checked before the key and the query
    r = h.request(gw.port, h.PATH + "?days=0", {}, method="DELETE")
    h.json_error(r, 405, "method_not_allowed")
    assert h.sim_total(sim) == before


@run.test
def healthz():
    r = h.request(gw.port, "/healthz")
    assert r.status == 200, r
    assert (r.header("content-type") or "").startswith("application/json"), r.headers
    body = r.json()
    version = subprocess.run([a.gateway, "--version"], capture_output=True,
                             timeout=10).stdout.decode().split()[-1]
    assert body["status"] == "ok", body
    assert body["version"] == version, (body, version)
    assert isinstance(body["uptime_seconds"], int) and 0 <= body["uptime_seconds"] < 600, body


@run.test
def gateway_still_serves_after_the_table():
    r = h.contacts(gw.port, "days=30&limit=3")
    assert r.status == 200 and len(r.json()) == 3, r
    assert r.body == h.contacts(sim.port, "days=30&limit=3").body


@run.test
def clean_exit():
    h.stop_gateway(gw)
    assert sim.stop() == 0, sim.tail()


run.run()
