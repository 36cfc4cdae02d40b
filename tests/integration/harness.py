"""Scenario-test harness: runs the real gateway and simulator binaries on
loopback ports and talks HTTP to them. Python 3 standard library only.

Every process is started with --listen 127.0.0.1:0 and its port read from the
`listening on HOST:PORT` line it prints; its stderr goes to a log file that is
shown when a test fails. Every request has a timeout; every process is killed
at exit. CG_WRAP (e.g. "valgrind --error-exitcode=99 ...") prefixes the
gateway's command line, and a wrapped gateway must exit 0 at the end.
"""
import argparse
import atexit
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

NOW = "2026-01-01T00:00:00Z"
KEY_A = "sim-key-alpha"
KEY_B = "sim-key-bravo"
WRAP = shlex.split(os.environ.get("CG_WRAP", ""))
START_TIMEOUT = 60 if WRAP else 10

_procs = []
_tmp = tempfile.mkdtemp(prefix="cg-it-")


def args():
    p = argparse.ArgumentParser()
    p.add_argument("--gateway", required=True)
    p.add_argument("--sim", required=True)
    return p.parse_args()


class Proc:
    """A started binary; .port once it listens, .log its stderr file."""

    def __init__(self, cmd, name, wait_listen=True):
        self.name = name
        self.log = os.path.join(_tmp, "%s-%d.log" % (name, len(_procs)))
        self.logf = open(self.log, "wb")
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.logf,
                                  stdin=subprocess.DEVNULL)
        self.port = None
        _procs.append(self)
        if wait_listen:
            deadline = time.time() + START_TIMEOUT
            while time.time() < deadline:
                m = re.search(r"listening on (\S+):(\d+)", self.read_log())
                if m:
                    self.port = int(m.group(2))
                    return
                if self.p.poll() is not None:
                    break
                time.sleep(0.02)
            raise AssertionError("%s did not start: %s" % (name, self.read_log()[-2000:]))

    def read_log(self):
        with open(self.log, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, sig):
        self.p.send_signal(sig)

    def wait(self, timeout=10):
        return self.p.wait(timeout=timeout)

    def stop(self, timeout=10):
        """SIGTERM and wait; SIGKILL if it hangs. Returns the exit code."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        self.logf.close()
        return self.p.returncode

    def kill9(self):
        self.p.kill()
        self.p.wait(timeout=5)
        self.logf.close()


def _cleanup():
    for pr in _procs:
        if pr.p.poll() is None:
            pr.p.kill()
            pr.p.wait(timeout=5)
    shutil.rmtree(_tmp, ignore_errors=True)


atexit.register(_cleanup)


def tmpdir(name):
    d = os.path.join(_tmp, name)
    os.makedirs(d, exist_ok=True)
    return d


def start_sim(a, *extra, contacts=500):
    return Proc([a.sim, "--listen", "127.0.0.1:0", "--now", NOW,
                 "--contacts", str(contacts)] + list(extra), "sim")


_gw_count = [0]


def start_gateway(a, upstream_port, *extra, cache_dir=None):
    _gw_count[0] += 1
    if cache_dir is None:
        cache_dir = tmpdir("cache-%d" % _gw_count[0])
    cmd = WRAP + [a.gateway, "--listen", "127.0.0.1:0",
                  "--upstream", "http://127.0.0.1:%d" % upstream_port,
                  "--cache-dir", cache_dir] + list(extra)
    g = Proc(cmd, "gateway")
    g.cache_dir = cache_dir
    return g


def stop_gateway(g):
    """Stops a gateway; under CG_WRAP its exit code must be 0 (no leaks)."""
    rc = g.stop(timeout=60 if WRAP else 10)
    assert rc == 0, "gateway exited %s: %s" % (rc, g.read_log()[-3000:])


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body)


def request(port, path, headers=None, method="GET", timeout=10, conn=None):
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        body = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        return Response(r.status, hdrs, body)
    finally:
        if own:
            conn.close()


def contacts(port, query, key=KEY_A, headers=None, **kw):
    h = {"x-api-key": key} if key is not None else {}
    h.update(headers or {})
    return request(port, "/api/public/contacts" + ("?" + query if query else ""), h, **kw)


def sim_stats(sim):
    return request(sim.port, "/__sim/stats").json()


def sim_post(sim, path):
    r = request(sim.port, path, method="POST")
    assert r.status == 200, (path, r.status, r.body)


class Runner:
    """Registers tests, runs them in order, prints one line each and a total."""

    def __init__(self):
        self.tests = []
        self.logs = []  # processes whose log to show on failure

    def test(self, fn):
        self.tests.append(fn)
        return fn

    def watch(self, *procs):
        self.logs.extend(procs)

    def run(self):
        passed = failed = 0
        for fn in self.tests:
            t0 = time.time()
            try:
                fn()
                passed += 1
                print("PASS %s (%.2fs)" % (fn.__name__, time.time() - t0), flush=True)
            except Exception:
                failed += 1
                print("FAIL %s" % fn.__name__, flush=True)
                traceback.print_exc()
                for pr in self.logs:
                    print("--- %s log (tail) ---\n%s" % (pr.name, pr.read_log()[-2000:]))
        print("%d passed, %d failed" % (passed, failed), flush=True)
        sys.exit(1 if failed else 0)


def eventually(check, timeout=5.0, step=0.02):
    """Polls a condition a test waits for (bounded)."""
    deadline = time.time() + timeout
    while True:
        if check():
            return
        if time.time() > deadline:
            raise AssertionError("condition not met within %.1fs" % timeout)
        time.sleep(step)
