"""Invalid requests are refused by the gateway itself, with a JSON body that
names the parameter, and never reach the vendor: the simulator's request
counter does not move across the whole table."""
import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a)
gw = h.start_gateway(a, sim.port)
run.watch(gw)

UUID = "123e4567-e89b-12d3-a456-426614174000"
INVALID = [
    ("days=0", "days"), ("days=366", "days"), ("days=-1", "days"), ("days=abc", "days"),
    ("days=1e2", "days"), ("days=", "days"), ("days=1&days=2", "days"), ("days=1000", "days"),
    ("days=99999999999999999999999999", "days"), ("days=%00", "days"), ("days", "days"),
    ("", "days"), ("limit=10", "days"), ("foo=bar", "days"),
    ("days=1&limit=0", "limit"), ("days=1&limit=1001", "limit"), ("days=1&limit=10.5", "limit"),
    ("days=1&limit=abc", "limit"), ("days=1&offset=-1", "offset"),
    ("days=1&offset=2147483648", "offset"), ("days=1&offset=1.5", "offset"),
    ("created_after=2024-13-01", "created_after"), ("created_after=2023-02-29", "created_after"),
    ("created_after=2024-01-15T10:00:00", "created_after"),
    ("created_after=2024-01-15T10:00:00+02:00", "created_after"),
    ("updated_after=yesterday", "updated_after"), ("updated_after=2024-01-15T25:00:00Z", "updated_after"),
    ("updated_after=", "updated_after"),
    ("days=1&stage_id=not-a-uuid", "stage_id"), ("days=1&stage_id=%s0" % UUID, "stage_id"),
    ("days=1&stage_id=123e4567-e89b-92d3-a456-426614174000", "stage_id"),
    ("days=1&pipeline_id=123e4567-e89b-12d3-c456-426614174000", "pipeline_id"),
    ("days=1&custom_field_key=status", "custom_field_value"),
    ("days=1&custom_field_value=Active", "custom_field_key"),
    ("days=1&custom_field_key=&custom_field_value=x", "custom_field_key"),
    ("days=1&custom_field_key=s&custom_field_value=%C0%AF", "custom_field_value"),
    ("days=1&custom_field_key=s&custom_field_value=%ZZ", "custom_field_value"),
    ("days=1&entity_type=Ticket", "entity_type"), ("days=1&entity_type=both", "entity_type"),
    ("days=1&x=%00", "x"), ("days=1&x=%4", "x"),
]


@run.test
def invalid_parameters_refused_locally():
    before = h.sim_stats(sim)["total"]
    for query, param in INVALID:
        r = h.contacts(gw.port, query)
        assert r.status == 400, (query, r.status, r.body)
        assert r.header("content-type").startswith("application/json")
        body = r.json()
        assert body["error"] == "invalid_parameter", (query, body)
        assert body["parameter"] == param, (query, body)
        assert len(body["message"]) > 10
    assert h.sim_stats(sim)["total"] == before


@run.test
def missing_or_bad_key_is_401_locally():
    before = h.sim_stats(sim)["total"]
    for headers in ({}, {"x-api-key": ""}, {"x-api-key": "a b"},
                    {"x-api-key": "k" * 600}):
        r = h.request(gw.port, "/api/public/contacts?days=1", headers)
        assert r.status == 401, (headers, r.status)
        body = r.json()
        assert body["error"] == "unauthorized" and body["message"]
    assert h.sim_stats(sim)["total"] == before


@run.test
def other_paths_and_methods():
    r = h.request(gw.port, "/api/public/contact?days=1", {"x-api-key": h.KEY_A})
    assert r.status == 404 and r.json()["error"] == "not_found"
    r = h.request(gw.port, "/", {})
    assert r.status == 404
    for m in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        r = h.request(gw.port, "/api/public/contacts?days=1", {"x-api-key": h.KEY_A}, method=m)
        assert r.status == 405, (m, r.status)
        assert r.header("allow") == "GET, HEAD"
        assert r.json()["error"] == "method_not_allowed"


@run.test
def healthz():
    r = h.request(gw.port, "/healthz")
    assert r.status == 200
    body = r.json()
    assert body["status"] == "ok" and body["version"] and body["uptime_seconds"] >= 0


@run.test
def gateway_still_serves_after_the_table():
    r = h.contacts(gw.port, "days=30&limit=3")
    assert r.status == 200 and len(r.json()) == 3



@run.test
def clean_exit():
    h.stop_gateway(gw)
    assert sim.stop() == 0, sim.read_log()[-2000:]


run.run()
