"""Shared bench helpers: start the built binaries (and peers) on loopback,
time requests, summarise distributions. Python 3 standard library only."""
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("CG_BUILD", os.path.join(HERE, "..", "build"))
TMP = tempfile.mkdtemp(prefix="cg-bench-")
PROCS = []


def start(cmd, name, pattern=r"listening on (\S+):(\d+)", port=None):
    log = open(os.path.join(TMP, name + ".log"), "wb")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
    PROCS.append(p)
    deadline = time.time() + 15
    while time.time() < deadline:
        if port is not None:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
                return port
            except OSError:
                pass
        else:
            with open(log.name, "rb") as f:
                m = re.search(pattern, f.read().decode("utf-8", "replace"))
            if m:
                return int(m.group(2))
        if p.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit("bench: %s did not start; see %s" % (name, log.name))


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    shutil.rmtree(TMP, ignore_errors=True)


def start_sim(contacts=2000, latency=0):
    return start([os.path.join(BUILD, "contacts-sim"), "--listen", "127.0.0.1:0",
                  "--now", "2026-01-01T00:00:00Z", "--contacts", str(contacts),
                  "--latency-ms", str(latency)], "sim")


def start_gateway(sim_port, *extra):
    d = os.path.join(TMP, "cache-%d" % len(PROCS))
    # the gateway logs its port at info level; start at info, it is quiet after
    return start([os.path.join(BUILD, "contacts-gateway"), "--listen", "127.0.0.1:0",
                  "--upstream", "http://127.0.0.1:%d" % sim_port, "--cache-dir", d]
                 + list(extra), "gateway-%d" % len(PROCS))


def get(conn, path, key="sim-key-alpha", headers=None):
    h = {"x-api-key": key}
    h.update(headers or {})
    t0 = time.perf_counter()
    conn.request("GET", path, headers=h)
    r = conn.getresponse()
    body = r.read()
    return time.perf_counter() - t0, r.status, body


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def ms(x):
    return "%.3f" % (x * 1000.0)
