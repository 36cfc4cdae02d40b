"""Observability on the real gateway (issue 9):

- GET /metrics: every counter by exact value after a scripted run (3
  distinct misses and 5 hits; collapsed followers; a vendor 429 and the
  refusal after it; a breaker opening; offline), valid for `promtool check
  metrics` (Debian's prometheus package, installed by the test when it can
  be), and scraped by a real Prometheus server started on a free port with
  a 1 s scrape interval, which then answers a query for
  contacts_gateway_requests_total;
- the access log: one JSON object per answered request with exactly the
  documented fields, never the raw key, the client's X-Request-Id echoed on
  the answer, in the log and sent upstream; reopened on SIGUSR1 (rotation);
- /readyz: 200 with its JSON while serving; /healthz stays liveness;
- the event log lines: vendor 429 with key_id, breaker open, offline on/off
  and by what; --log-format json gives one JSON object per line.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a)
WORK = h.tmpdir("obs")


def metrics(port):
    """{(name, frozenset(labels)): value} of the exposition at port."""
    r = h.request(port, "/metrics")
    assert r.status == 200, r
    assert r.header("content-type").startswith("text/plain; version=0.0.4"), r.headers
    out = {}
    for line in r.body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        if "{" in series:
            name, rest = series.split("{", 1)
            labels = frozenset(tuple(kv.split("=", 1)) for kv in rest[:-1].split(","))
            labels = frozenset((k, v.strip('"')) for k, v in labels)
        else:
            name, labels = series, frozenset()
        out[(name, labels)] = float(value)
    return out


def val(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0.0)


def gateway(*extra, log=None, protect=False):
    args = ["--ttl", "60"] + list(extra)
    if log:
        args += ["--access-log", log]
    return h.start_gateway(a, sim.port, *args, protect=protect)


@run.test
def counters_are_exact():
    h.sim_reset(sim)
    g = gateway("--caller-header", "x-client-id")
    try:
        for d in (1, 2, 3):  # three distinct misses
            assert h.contacts(g.port, "days=%d" % d, headers={"x-client-id": "svc-a"}).status == 200
        for i in range(5):  # five hits
            assert "hit" in h.contacts(g.port, "days=%d" % (1 + i % 3),
                                       headers={"x-client-id": "svc-b"}).header("cache-status")
        h.json_error(h.contacts(g.port, "days=400"), 400, "invalid_parameter")
        h.json_error(h.contacts(g.port, "days=4", key=None), 401, "unauthorized")
        m = metrics(g.port)
        assert val(m, "contacts_gateway_requests_total", code="200", cache="miss") == 3, m
        assert val(m, "contacts_gateway_requests_total", code="200", cache="hit") == 5
        assert val(m, "contacts_gateway_requests_total", code="400", cache="none") == 1
        assert val(m, "contacts_gateway_requests_total", code="401", cache="none") == 1
        assert val(m, "contacts_gateway_upstream_requests_total", code="200") == 3
        assert h.sim_total(sim) == 3
        assert val(m, "contacts_gateway_request_duration_seconds_count", cache="hit") == 5
        assert val(m, "contacts_gateway_request_duration_seconds_bucket", cache="hit",
                   le="+Inf") == 5
        assert val(m, "contacts_gateway_upstream_duration_seconds_count") == 3
        assert val(m, "contacts_gateway_caller_requests_total", caller="svc-a",
                   cache="miss") == 3
        assert val(m, "contacts_gateway_caller_requests_total", caller="svc-b",
                   cache="hit") == 5
        assert val(m, "contacts_gateway_build_info", version=m and next(
            dict(k[1])["version"] for k in m if k[0] == "contacts_gateway_build_info")) == 1
        assert val(m, "contacts_gateway_connections") >= 0
        assert val(m, "process_resident_memory_bytes") > 1e6
        assert val(m, "contacts_gateway_offline") == 0
        # the store's figures are read once a second
        h.eventually(lambda: val(metrics(g.port), "contacts_gateway_cache_entries") == 3,
                     what="cache_entries 3")
        text = h.request(g.port, "/metrics").body.decode()
        assert h.KEY_A not in text and "sim-key" not in text, "a raw key in the metrics"
    finally:
        h.stop_gateway(g)


@run.test
def collapsed_followers_429_and_refusals_are_counted():
    h.sim_reset(sim)
    g = gateway("--upstream-rate", "100", "--upstream-burst", "100", "--upstream-retries", "0",
                "--breaker-threshold", "0", protect=True)
    try:
        h.sim_latency(sim, 300)
        calls = [h.Background(lambda: h.contacts(g.port, "days=11")) for _ in range(4)]
        for c in calls:
            assert c.result(10).status == 200
        h.sim_latency(sim, 0)
        m = metrics(g.port)
        assert val(m, "contacts_gateway_requests_total", code="200", cache="miss") == 1, m
        assert val(m, "contacts_gateway_requests_total", code="200", cache="collapsed") == 3
        assert val(m, "contacts_gateway_upstream_requests_total", code="200") == 1
        # a vendor 429 blocks the key: the next miss is refused locally
        h.sim_fault(sim, "429", retry_after=30, key=h.KEY_A)
        assert h.contacts(g.port, "days=12").status == 429
        r = h.contacts(g.port, "days=13")
        assert r.status == 429 and r.json().get("limit") == "vendor_429", r
        m = metrics(g.port)
        assert val(m, "contacts_gateway_upstream_requests_total", code="429") == 1
        assert val(m, "contacts_gateway_upstream_refusals_total", reason="vendor_429") == 1
        assert val(m, "contacts_gateway_requests_total", code="429", cache="none") == 1
        assert val(m, "contacts_gateway_requests_total", code="429", cache="miss") == 1
        h.eventually(lambda: val(metrics(g.port), "contacts_gateway_keys_blocked") == 1,
                     what="keys_blocked 1")
        log = g.read_log()
        assert "429 for key_id=" in log and h.KEY_A not in log, log[-1000:]
    finally:
        h.sim_clear_faults(sim)
        h.stop_gateway(g)


@run.test
def breaker_and_offline_show_in_metrics_and_log():
    h.sim_reset(sim)
    g = gateway("--breaker-threshold", "2", "--breaker-cooldown", "60000",
                "--upstream-retries", "0", "--upstream-rate", "100", "--upstream-burst", "100",
                protect=True)
    try:
        h.sim_fault(sim, "status", status=500, count=2)
        for d in (21, 22):
            assert h.contacts(g.port, "days=%d" % d).status == 500
        r = h.contacts(g.port, "days=23")
        h.json_error(r, 503, "upstream_unavailable")
        m = metrics(g.port)
        assert val(m, "contacts_gateway_breaker_open") == 1, m
        assert val(m, "contacts_gateway_upstream_requests_total", code="500") == 2
        assert val(m, "contacts_gateway_upstream_refusals_total", reason="breaker") == 1
        h.eventually(lambda: "breaker: open" in g.read_log(), what="the breaker line")
        r = h.request(g.port, "/readyz")
        assert r.status == 200 and r.json()["breaker"] == "open", r
        g.signal(signal.SIGRTMIN + 1)
        h.eventually(lambda: val(metrics(g.port), "contacts_gateway_offline") == 1,
                     what="offline 1")
        # the flag is set before its log line is written: wait for the line too
        h.eventually(lambda: "offline: answering from the cache only (by signal SIGRTMIN+1)"
                     in g.read_log(), what="the offline line")
        assert h.request(g.port, "/readyz").json()["offline"] is True
        h.json_error(h.contacts(g.port, "days=24"), 504, "offline")
        assert val(metrics(g.port), "contacts_gateway_upstream_refusals_total",
                   reason="offline") == 1
    finally:
        h.sim_clear_faults(sim)
        h.stop_gateway(g)


FIELDS = ["time", "request_id", "method", "path", "query", "code", "cache", "bytes",
          "duration_ms", "upstream_ms", "upstream_code", "key_id", "caller", "client"]


def log_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@run.test
def trusted_proxies_name_the_client():
    # behind HAProxy the peer is HAProxy: with --trusted-proxies its
    # X-Forwarded-For names the client, for the access log and --client-rate
    path = os.path.join(WORK, "access-xff.log")
    g = gateway("--trusted-proxies", "127.0.0.0/8", "--client-rate", "0.001",
                "--client-burst", "1", log=path)
    try:
        xff = lambda ip: {"X-Forwarded-For": "198.51.100.9, " + ip}  # noqa: E731
        assert h.contacts(g.port, "days=121", headers=xff("203.0.113.1")).status == 200
        # another client behind the same proxy has a bucket of its own
        assert h.contacts(g.port, "days=122", headers=xff("203.0.113.2")).status == 200
        # the first one's is spent (burst 1): refused, named
        r = h.contacts(g.port, "days=123", headers=xff("203.0.113.1"))
        assert r.status == 429 and r.json().get("limit") == "client_rate", (r.status, r.body)
        h.eventually(lambda: os.path.exists(path) and len(log_lines(path)) >= 3,
                     what="3 access log lines")
        clients = sorted(x["client"] for x in log_lines(path))
        assert clients == ["203.0.113.1", "203.0.113.1", "203.0.113.2"], clients
    finally:
        h.stop_gateway(g)
    # not trusted: the peer is the client, whatever it says
    path = os.path.join(WORK, "access-noxff.log")
    g = gateway(log=path)
    try:
        assert h.contacts(g.port, "days=124",
                          headers={"X-Forwarded-For": "203.0.113.1"}).status == 200
        h.eventually(lambda: os.path.exists(path) and len(log_lines(path)) >= 1,
                     what="an access log line")
        assert log_lines(path)[0]["client"] == "127.0.0.1"
    finally:
        h.stop_gateway(g)


@run.test
def access_log_lines_and_rotation():
    h.sim_reset(sim)
    path = os.path.join(WORK, "access.log")
    g = gateway("--caller-header", "x-client-id", log=path)
    try:
        r = h.contacts(g.port, "limit=2&days=031", headers={"X-Request-Id": "trace-123",
                                                          "x-client-id": "svc/one"})
        assert r.status == 200 and r.header("x-request-id") == "trace-123", r.headers
        assert h.sim_stats(sim)["recent"][-1]["request_id"] == "trace-123"
        assert "hit" in h.contacts(g.port, "days=31&limit=2").header("cache-status")
        h.contacts(g.port, "days=abc")
        bad_id = h.contacts(g.port, "days=32", headers={"X-Request-Id": "no spaces allowed"})
        assert bad_id.header("x-request-id") not in (None, "no spaces allowed")
        h.eventually(lambda: os.path.exists(path) and len(log_lines(path)) >= 4,
                     what="4 access log lines")
        lines = log_lines(path)
        for line in lines:
            assert list(line) == FIELDS, list(line)
        # each loop writes its own lines: find them by what they were
        miss = [x for x in lines if x["request_id"] == "trace-123"]
        hit = [x for x in lines if x["query"] == "days=31&limit=2" and x["cache"] == "hit"]
        bad = [x for x in lines if x["code"] == 400]
        assert len(miss) == 1 and len(hit) == 1 and len(bad) == 1, lines
        miss, hit, bad = miss[0], hit[0], bad[0]
        assert miss["method"] == "GET"
        assert miss["path"] == "/api/public/contacts" and miss["query"] == "days=31&limit=2"
        assert miss["code"] == 200 and miss["cache"] == "miss" and miss["bytes"] == len(r.body)
        assert miss["upstream_code"] == 200 and miss["upstream_ms"] >= 0
        assert miss["caller"] == "svc/one" and miss["client"] == "127.0.0.1"
        assert len(miss["key_id"]) == 12 and all(c in "0123456789abcdef" for c in miss["key_id"])
        assert hit["upstream_ms"] is None and hit["upstream_code"] is None
        assert hit["key_id"] == miss["key_id"] and hit["caller"] is None
        assert bad["query"] == "days=abc" and bad["cache"] == "none"
        with open(path) as f:
            assert h.KEY_A not in f.read(), "the raw key in the access log"
        # rotation: move the file away, SIGUSR1, new lines go to a new file
        os.rename(path, path + ".1")
        g.signal(signal.SIGUSR1)
        h.eventually(lambda: "SIGUSR1: logs reopened" in g.read_log(), what="reopen")
        assert h.contacts(g.port, "days=33").status == 200
        h.eventually(lambda: os.path.exists(path) and len(log_lines(path)) == 1,
                     what="a line in the new file")
        assert log_lines(path)[0]["query"] == "days=33"
    finally:
        h.stop_gateway(g)


@run.test
def json_error_log_and_readyz():
    g = gateway("--log-format", "json")
    try:
        r = h.request(g.port, "/readyz")
        assert r.status == 200, r
        body = r.json()
        assert body["status"] == "ready" and body["offline"] is False, body
        assert body["breaker"] == "closed" and "queue_waiting" in body, body
        assert h.request(g.port, "/healthz").status == 200
    finally:
        h.stop_gateway(g)
    for line in g.read_log().splitlines():
        obj = json.loads(line)
        assert set(obj) == {"time", "level", "msg"}, obj


def ensure_prometheus():
    """promtool and prometheus from Debian's package (installed when root);
    None with the reason when they cannot be had."""
    if not shutil.which("promtool"):
        if os.geteuid() != 0:
            return None, "not root: cannot install Debian's prometheus package"
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                            "prometheus"], capture_output=True, timeout=300,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
            r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                "prometheus"], capture_output=True, timeout=300,
                               env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if r.returncode != 0 or not shutil.which("promtool"):
            return None, "apt-get install prometheus failed: %s" % r.stderr[-300:]
    return shutil.which("prometheus"), None


@run.test
def promtool_and_a_real_prometheus_scrape():
    prom, why = ensure_prometheus()
    if why:
        print("    SKIP: %s" % why)
        return
    h.sim_reset(sim)
    g = gateway()
    try:
        for d in (41, 42, 41):
            h.contacts(g.port, "days=%d" % d)
        text = h.request(g.port, "/metrics").body
        r = subprocess.run(["promtool", "check", "metrics"], input=text,
                           capture_output=True, timeout=30)
        assert r.returncode == 0, (r.stdout, r.stderr)
        # the shipped scrape config and alert rules
        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy",
                            "prometheus")
        for what, f in (("rules", "alerts.yml"), ("config", "prometheus.yml")):
            r = subprocess.run(["promtool", "check", what, os.path.join(here, f)],
                               capture_output=True, timeout=30)
            assert r.returncode == 0, (f, r.stdout, r.stderr)
        if prom is None:
            print("    promtool ok; no prometheus binary to scrape with")
            return
        port = h.free_port()
        d = tempfile.mkdtemp(dir=WORK)
        conf = os.path.join(d, "prometheus.yml")
        with open(conf, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: gateway\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % g.port)
        p = subprocess.Popen([prom, "--config.file", conf, "--storage.tsdb.path",
                              os.path.join(d, "data"), "--web.listen-address",
                              "127.0.0.1:%d" % port], stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(d, "prometheus.log"), "wb"))
        try:
            url = ("http://127.0.0.1:%d/api/v1/query?query=sum(contacts_gateway_requests_total)"
                   % port)
            got = [None]

            def answered():
                try:
                    with urllib.request.urlopen(url, timeout=2) as resp:
                        res = json.loads(resp.read())["data"]["result"]
                except (OSError, ValueError, KeyError):
                    return False
                if res:
                    got[0] = float(res[0]["value"][1])
                return bool(res)

            h.eventually(answered, timeout=40, step=0.5, what="Prometheus scraped the gateway")
            assert got[0] == 3, got
            print("    prometheus scraped sum(contacts_gateway_requests_total) = %d" % got[0])
        finally:
            p.terminate()
            p.wait(10)
    finally:
        h.stop_gateway(g)


@run.test
def clean_exit():
    assert sim.stop() == 0, sim.tail()


run.run()
