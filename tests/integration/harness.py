"""Scenario-test harness: runs the real gateway and simulator binaries on
loopback and talks HTTP to them. Python 3 standard library only (no pytest).

A scenario file is a script:

    import harness as h
    a = h.args()                      # --gateway PATH --sim PATH
    run = h.Runner()
    sim = h.start_sim(a)
    gw = h.start_gateway(a, sim.port, "--ttl", "0")

    @run.test
    def something():
        r = h.contacts(gw.port, "days=30")
        assert r.status == 200, r.status

    run.run()                         # PASS/FAIL lines, "N passed, M failed", exit 1 on failure

Processes: every binary is started with --listen 127.0.0.1:0 and its port read
from the `listening on HOST:PORT` line it prints on stderr (bounded wait). Its
stderr is a pipe drained by a background thread into a log file (the pipe never
fills), shown when a test fails. Every process is stopped at exit, also after a
failure, an exception or a SIGTERM of the script: SIGTERM, 5 s grace, SIGKILL.

Bounds: every socket has a timeout, every wait has a deadline, and a watchdog
(SIGALRM, CG_IT_WATCHDOG seconds, default 55) ends a script that would run
away, counting the tests not run as failed.

CG_WRAP (e.g. "valgrind --error-exitcode=99 --leak-check=full") prefixes the
gateway's command line; a wrapped gateway must exit 0 when stopped, so memory
errors and leaks fail the test that stops it. Timeouts are stretched then.
"""
import argparse
import atexit
import http.client
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

NOW = "2026-01-01T00:00:00Z"
KEY_A = "sim-key-alpha"
KEY_B = "sim-key-bravo"
KEY_C = "sim-key-charlie"
PATH = "/api/public/contacts"
WRAP = shlex.split(os.environ.get("CG_WRAP", ""))
# factor for timeouts and rates: under a wrapper (valgrind), and under the
# sanitizer builds (scripts/test.sh sets CG_IT_SLOW there)
SLOW = int(os.environ.get("CG_IT_SLOW", "6" if WRAP else "1"))
START_TIMEOUT = 10 * SLOW           # seconds for a binary to print its port
TIMEOUT = 10 * SLOW                 # default socket timeout, seconds
WATCHDOG = int(os.environ.get("CG_IT_WATCHDOG", str(170 if WRAP else 55)))
LISTEN_RE = re.compile(r"listening on (\S+):(\d+)")

_procs = []
_tmp = tempfile.mkdtemp(prefix="cg-it-")


class Watchdog(BaseException):
    """Raised by SIGALRM when the script overruns WATCHDOG seconds."""


def _on_alarm(signum, frame):
    raise Watchdog("watchdog: the script ran over %d s" % WATCHDOG)


def _on_term(signum, frame):
    sys.exit(1)  # atexit stops the processes


def args():
    """Parses --gateway PATH --sim PATH and arms the watchdog."""
    p = argparse.ArgumentParser()
    p.add_argument("--gateway", required=True)
    p.add_argument("--sim", required=True)
    a = p.parse_args()
    a.gateway = os.path.abspath(a.gateway)
    a.sim = os.path.abspath(a.sim)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(WATCHDOG)
    return a


# ---- processes ----

class Proc:
    """A started binary. .port (and .host) once it listens; .log is the path
    of its stderr log; .cmd its command line."""

    def __init__(self, cmd, name, wait_listen=True, timeout=None, env=None, pass_fds=()):
        self.name = name
        self.cmd = list(cmd)
        self.host = None
        self.port = None
        self.log = os.path.join(_tmp, "%s-%d.log" % (name, len(_procs)))
        self._logf = open(self.log, "wb")
        self._listening = threading.Event()
        self._eof = threading.Event()
        self.p = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  env=env, pass_fds=tuple(pass_fds))
        _procs.append(self)
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        if wait_listen:
            self.wait_listening(timeout or START_TIMEOUT)

    def _drain(self):
        """Copies stderr to the log file until EOF; spots the listening line."""
        fd = self.p.stderr.fileno()
        pending = b""
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self._logf.write(chunk)
                self._logf.flush()
                if not self._listening.is_set():
                    pending += chunk
                    lines = pending.split(b"\n")
                    pending = lines.pop()[-8192:]
                    for line in lines:
                        m = LISTEN_RE.search(line.decode("utf-8", "replace"))
                        if m:
                            self.host, self.port = m.group(1), int(m.group(2))
                            self._listening.set()
                            break
        finally:
            self._logf.close()
            self.p.stderr.close()
            self._eof.set()

    def wait_listening(self, timeout=START_TIMEOUT):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._listening.wait(0.02):
                return self.port
            if self.p.poll() is not None:
                self._eof.wait(2)
                if self._listening.is_set():
                    return self.port
                raise AssertionError("%s exited %s before listening: %s" % (
                    self.name, self.p.returncode, self.tail(1500)))
        raise AssertionError("%s did not print 'listening on' within %.0fs: %s" % (
            self.name, timeout, self.tail(1500)))

    def read_log(self):
        """Everything the process wrote on stderr so far."""
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def tail(self, n=3000):
        return self.read_log()[-n:]

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def wait(self, timeout=10):
        """Waits for the exit; returns the exit code (AssertionError on timeout)."""
        try:
            rc = self.p.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running after %.0fs" % (self.name, timeout * SLOW))
        self._eof.wait(5)
        return rc

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL if it has not exited within timeout seconds.
        Returns the exit code (negative: killed by that signal)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        self._eof.wait(5)
        return self.p.returncode

    def kill9(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=5)
        self._eof.wait(5)


def _cleanup():
    live = [pr for pr in _procs if pr.p.poll() is None]
    for pr in live:
        try:
            pr.p.send_signal(signal.SIGTERM)
        except OSError:
            pass
    deadline = time.time() + 5
    for pr in live:
        try:
            pr.p.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pr.p.kill()
            try:
                pr.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    if not os.environ.get("CG_IT_KEEP"):
        shutil.rmtree(_tmp, ignore_errors=True)


atexit.register(_cleanup)


def tmpdir(name):
    """A fresh directory under the script's temporary directory."""
    d = os.path.join(_tmp, name)
    os.makedirs(d, exist_ok=True)
    return d


def start_sim(a, *extra, contacts=500):
    """A simulator on an ephemeral port, clock fixed at NOW."""
    return Proc([a.sim, "--listen", "127.0.0.1:0", "--now", NOW,
                 "--contacts", str(contacts)] + list(extra), "sim")


_gw_options = {}


def gateway_options(a):
    """The long options the gateway's --help lists (so the harness only passes
    --cache-dir to a gateway that has one)."""
    if a.gateway not in _gw_options:
        r = subprocess.run([a.gateway, "--help"], capture_output=True, timeout=10,
                           stdin=subprocess.DEVNULL)
        _gw_options[a.gateway] = set(re.findall(r"--[a-z][a-z0-9-]*", r.stdout.decode(
            "utf-8", "replace")))
    return _gw_options[a.gateway]


_gw_count = [0]


# Upstream protection (rate limits, retries, the breaker) off, so that
# scenarios about other things see every request reach the simulator once;
# the protection scenarios pass protect=True and their own settings.
UNPROTECTED = ["--upstream-rate", "100000", "--upstream-burst", "100000",
               "--upstream-retries", "0", "--breaker-threshold", "0",
               "--new-key-rate", "off", "--unauthorized-ttl", "0"]


def start_gateway(a, upstream_port, *extra, cache_dir=None, upstream=None, protect=False):
    """A gateway on an ephemeral port in front of http://127.0.0.1:upstream_port
    (or the URL `upstream`), with a private cache directory when it has a
    cache. `extra` are further flags (after UNPROTECTED unless protect)."""
    _gw_count[0] += 1
    if upstream is None:
        upstream = "http://127.0.0.1:%d" % upstream_port
    cmd = WRAP + [a.gateway, "--listen", "127.0.0.1:0", "--upstream", upstream]
    if cache_dir is None and "--cache-dir" in gateway_options(a):
        cache_dir = tmpdir("cache-%d" % _gw_count[0])
    if cache_dir is not None:
        cmd += ["--cache-dir", cache_dir]
    if not protect and "--upstream-rate" in gateway_options(a):
        cmd += UNPROTECTED
    g = Proc(cmd + list(extra), "gateway")
    g.cache_dir = cache_dir
    return g


def stop_gateway(g):
    """Stops a gateway with SIGTERM; it must exit 0 (under CG_WRAP: no leaks)."""
    rc = g.stop(timeout=10)
    assert rc == 0, "gateway exited %s: %s" % (rc, g.tail())


def free_port():
    """A loopback port that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- HTTP ----

class Response:
    """status, reason, headers (lower-case names -> last value), header_list
    (every (name, value) in order), body (bytes)."""

    def __init__(self, status, header_list, body, reason=""):
        self.status = status
        self.reason = reason
        self.header_list = header_list
        self.headers = {k.lower(): v for k, v in header_list}
        self.body = body

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%d %s %r>" % (self.status, self.headers.get("content-type"), self.body[:300])


def connect(port, timeout=None):
    """A persistent http.client connection to the loopback port."""
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout or TIMEOUT)


def request(port, path, headers=None, method="GET", timeout=None, conn=None, body=None):
    """One request; on `conn` (kept open) when given, else on a new
    connection closed afterwards. Returns a Response."""
    own = conn is None
    if own:
        conn = connect(port, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, r.getheaders(), data, r.reason)
    finally:
        if own:
            conn.close()


def contacts(port, query, key=KEY_A, headers=None, **kw):
    """GET /api/public/contacts?query with x-api-key: key (none if key is None)."""
    h = {"x-api-key": key} if key is not None else {}
    h.update(headers or {})
    return request(port, PATH + ("?" + query if query else ""), h, **kw)


def raw_exchange(port, data, timeout=5.0):
    """Sends raw bytes and reads until the server closes or `timeout` passes
    without data. Returns (bytes received, True if the server closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if data:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered and closed early: read what it sent
        got = b""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return got, False
            except ConnectionResetError:
                return got, True
            if not chunk:
                return got, True
            got += chunk
        return got, False
    finally:
        s.close()


def raw_status(data):
    """The status code of a raw HTTP answer (None if there is none)."""
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else None


def json_error(r, status, error):
    """Asserts r is `status` with an application/json body whose "error" is
    `error` and whose "message" is a non-empty string; returns the body."""
    assert r.status == status, "want %d %s, got %r" % (status, error, r)
    ct = r.header("content-type") or ""
    assert ct.startswith("application/json"), "content-type %r" % ct
    body = r.json()
    assert body.get("error") == error, body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


# ---- simulator control ----

def sim_stats(sim):
    r = request(sim.port, "/__sim/stats")
    assert r.status == 200, r
    return r.json()


def sim_post(sim, path):
    r = request(sim.port, path, method="POST")
    assert r.status == 200, (path, r)


def sim_reset(sim):
    sim_post(sim, "/__sim/reset")


def sim_latency(sim, ms):
    sim_post(sim, "/__sim/latency?ms=%d" % ms)


def sim_fault(sim, kind, **params):
    """Queues a fault: sim_fault(sim, "status", status=503, count=2, key=KEY_B)."""
    q = "".join("&%s=%s" % kv for kv in params.items())
    sim_post(sim, "/__sim/fault?kind=%s%s" % (kind, q))


def sim_clear_faults(sim):
    sim_post(sim, "/__sim/faults/clear")


def sim_orgs(sim):
    r = request(sim.port, "/__sim/orgs")
    assert r.status == 200, r
    return r.json()


def sim_total(sim):
    return sim_stats(sim)["total"]


# ---- waiting ----

def eventually(check, timeout=5.0, step=0.02, what="condition"):
    """Polls check() until true, at most timeout seconds."""
    deadline = time.time() + timeout * SLOW
    while True:
        if check():
            return
        if time.time() > deadline:
            raise AssertionError("%s not met within %.1fs" % (what, timeout * SLOW))
        time.sleep(step)


class Background:
    """Runs fn() in a thread; .result(timeout) returns its value or raises
    what it raised."""

    def __init__(self, fn):
        self._out = {}
        self._t = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._t.start()

    def _run(self, fn):
        try:
            self._out["r"] = fn()
        except BaseException as e:  # handed to result()
            self._out["e"] = e

    def result(self, timeout=10):
        self._t.join(timeout * SLOW)
        if self._t.is_alive():
            raise AssertionError("background call still running after %.0fs" % timeout)
        if "e" in self._out:
            raise self._out["e"]
        return self._out["r"]


# ---- runner ----

def _reason(e):
    text = str(e)
    if not text:
        tb = traceback.extract_tb(e.__traceback__)
        text = tb[-1].line if tb else ""
    if not isinstance(e, AssertionError):
        text = "%s: %s" % (type(e).__name__, text)
    text = " ".join(text.split())
    return text[:600] + ("..." if len(text) > 600 else "")


class Runner:
    """Registers tests, runs them in order, prints `PASS name` or
    `FAIL name: reason` (with the traceback and the log tails of the watched
    processes and of gateways the test started), then `N passed, M failed`;
    exits 1 if anything failed."""

    def __init__(self):
        self.tests = []
        self.logs = []

    def test(self, fn):
        self.tests.append(fn)
        return fn

    def watch(self, *procs):
        self.logs.extend(procs)

    def _show_logs(self, first_proc):
        shown = []
        for pr in self.logs + _procs[first_proc:]:
            if pr in shown or (pr not in self.logs and pr.name != "gateway"):
                continue
            shown.append(pr)
            print("    --- %s (%s) stderr, tail ---" % (pr.name, " ".join(pr.cmd[-6:])))
            for line in pr.tail(2500).splitlines():
                print("    | " + line)

    def run(self):
        """Runs the tests in order; CG_IT_ONLY=part,part runs only those whose
        name holds one of the parts (for development: clean_exit and the
        like are then skipped too)."""
        passed = failed = 0
        only = [p for p in os.environ.get("CG_IT_ONLY", "").split(",") if p]
        if only:
            self.tests = [fn for fn in self.tests if any(p in fn.__name__ for p in only)]
        for i, fn in enumerate(self.tests):
            t0 = time.time()
            first_proc = len(_procs)
            try:
                fn()
                passed += 1
                print("PASS %s (%.2fs)" % (fn.__name__, time.time() - t0), flush=True)
            except (Exception, Watchdog) as e:
                failed += 1
                print("FAIL %s: %s" % (fn.__name__, _reason(e)), flush=True)
                for line in traceback.format_exc().rstrip().splitlines():
                    print("    " + line)
                self._show_logs(first_proc)
                sys.stdout.flush()
                if isinstance(e, Watchdog):
                    for rest in self.tests[i + 1:]:
                        failed += 1
                        print("FAIL %s: not run (watchdog)" % rest.__name__)
                    break
        signal.alarm(0)
        print("%d passed, %d failed" % (passed, failed), flush=True)
        sys.exit(1 if failed else 0)


class KeyStub:
    """A stand-in vendor on 127.0.0.1, for answers the simulator does not
    give: every GET is counted per x-api-key (`count`, `n(key)`) and answered
    as JSON with what the subclass's answer(key, path) returns, (status,
    headers, body). answer() runs outside `lock` (it may take it)."""

    def __init__(self):
        stub = self
        self.lock = threading.Lock()
        self.count = {}

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                key = self.headers.get("x-api-key", "")
                with stub.lock:
                    stub.count[key] = stub.count.get(key, 0) + 1
                status, headers, body = stub.answer(key, self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, key, path):
        raise NotImplementedError

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def n(self, key):
        with self.lock:
            return self.count.get(key, 0)
