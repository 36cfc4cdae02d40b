"""Shared bench helpers: start the built binaries (and peers) on loopback,
time requests, drive wrk, read a process tree's CPU time and memory,
summarise distributions. Python 3 standard library only.

Peers (Debian packages, installed by ensure_tools through scripts/setup.sh):
nginx-light (proxy_cache) and varnish 7.1, each on 127.0.0.1 only, each in a
temporary directory removed by stop_all.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("CG_BUILD", os.path.join(HERE, "..", "build"))
TMP = tempfile.mkdtemp(prefix="cg-bench-")
PROCS = []
KEY = "sim-key-alpha"
NGINX = "/usr/sbin/nginx"
VARNISHD = "/usr/sbin/varnishd"


def start(cmd, name, pattern=r"listening on (\S+):(\d+)", port=None, cwd=None):
    """Starts cmd (stderr to TMP/name.log) and returns its port: `port` once
    it accepts connections, else the one its log names (pattern)."""
    log = open(os.path.join(TMP, name + ".log"), "wb")
    p = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=cwd)
    PROCS.append(p)
    deadline = time.time() + 30
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


PORT_PIDS = {}  # port -> pid of the process start_* started on it


def pid_of(port):
    return PORT_PIDS[port]


def _started(port):
    PORT_PIDS[port] = PROCS[-1].pid
    return port


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
    shutil.rmtree(TMP, ignore_errors=True)


def ensure_tools(*packages):
    """Installs the Debian packages named that are missing (scripts/setup.sh,
    root or sudo). Packages: wrk, nginx-light, varnish."""
    need = {"wrk": shutil.which("wrk"), "nginx-light": os.path.exists(NGINX),
            "varnish": os.path.exists(VARNISHD)}
    missing = [p for p in packages if not need.get(p)]
    if missing:
        subprocess.run([os.path.join(HERE, "..", "scripts", "setup.sh")], check=True,
                       env=dict(os.environ, CG_SETUP_EXTRA=" ".join(missing)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_sim(contacts=2000, latency=0):
    return _started(start([os.path.join(BUILD, "contacts-sim"), "--listen", "127.0.0.1:0",
                           "--now", "2026-01-01T00:00:00Z", "--contacts", str(contacts),
                           "--latency-ms", str(latency)], "sim-%d" % len(PROCS)))


def start_gateway(sim_port, *extra, binary=None):
    """A gateway on a fresh cache directory; `binary` another build's."""
    d = os.path.join(TMP, "cache-%d" % len(PROCS))
    # the gateway logs its port at info level; start at info, it is quiet after
    return _started(start([binary or os.path.join(BUILD, "contacts-gateway"),
                           "--listen", "127.0.0.1:0",
                           "--upstream", "http://127.0.0.1:%d" % sim_port, "--cache-dir", d]
                          + list(extra), "gateway-%d" % len(PROCS)))


# nginx 1.22 proxy_cache at its best for hits (tuned, the default): sendfile
# and open_file_cache (no open/fstat/close per hit), keep-alive connections
# never recycled (the gateway and Varnish do not recycle them either). With
# tuned=False the configuration bench/hits used before 2026-11-30 (nginx's
# defaults: no sendfile, a file opened per hit, 1000 requests a connection).
# No access log either way.
NGINX_CONF = """
worker_processes %(workers)d;
daemon off;
pid %(tmp)s/nginx.pid;
error_log %(tmp)s/nginx-error.log warn;
%(user)s
events { worker_connections 4096; }
http {
    access_log off;
%(tuning)s    proxy_cache_path %(tmp)s/nginx-cache levels=1:2 keys_zone=contacts:16m
                     max_size=1g inactive=1h use_temp_path=off;
%(gzip)s    upstream sim { server 127.0.0.1:%(sim)d; keepalive 32; }
    server {
        listen 127.0.0.1:%(port)d%(reuseport)s;
        location / {
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache contacts;
            proxy_cache_key "$http_x_api_key$request_uri";
            proxy_cache_valid 200 10m;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
%(location_extra)s        }
    }
}
"""


# gzip=True: nginx compresses answers for clients that accept gzip. Its
# proxy_cache stores the simulator's identity body (the simulator never
# compresses), so every gzip hit is compressed again, at nginx's default
# gzip_comp_level 1, and sent chunked (its length is not known up front).
NGINX_GZIP = """    gzip on;
    gzip_types application/json;
    gzip_proxied any;
"""


NGINX_TUNING = """    sendfile on;
    open_file_cache max=1000 inactive=10m;
    open_file_cache_valid 10m;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
"""


def start_nginx(sim_port, name, workers=1, reuseport=False, tuned=True,
                no_sendfile_limits=None, gzip=False):
    """nginx proxy_cache on loopback. no_sendfile_limits (tuned only): a
    regex of limit= values answered without sendfile (it made 550 KB hits
    slower on our 2-core machine). gzip: NGINX_GZIP (compressing on every
    hit)."""
    port = free_port()
    d = os.path.join(TMP, name)
    os.makedirs(d)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF % {"workers": workers, "tmp": d, "sim": sim_port, "port": port,
                              "reuseport": " reuseport" if reuseport else "",
                              "tuning": NGINX_TUNING if tuned else "",
                              "gzip": NGINX_GZIP if gzip else "",
                              "location_extra": (
                                  '            if ($arg_limit ~ "%s") { sendfile off; }\n'
                                  % no_sendfile_limits if tuned and no_sendfile_limits
                                  else ""),
                              "user": "user root;" if os.geteuid() == 0 else ""})
    return _started(start([NGINX, "-p", d, "-c", conf], name, port=port))


# Varnish 7.1: cache 200s for 10 minutes keyed on the URL and the API key;
# anything else is passed through uncached. With gzip, beresp.do_gzip: the
# object is gzipped once, when it is stored (Varnish's gzip_level, default
# 6), sent as is to clients that accept gzip and gunzipped for the others.
VARNISH_VCL = """vcl 4.1;
backend sim { .host = "127.0.0.1"; .port = "%(sim)d"; }
sub vcl_hash {
    hash_data(req.url);
    hash_data(req.http.x-api-key);
    return (lookup);
}
sub vcl_backend_response {
    if (beresp.status == 200) {
        set beresp.ttl = 10m;
        set beresp.grace = 0s;
%(gzip)s    } else {
        set beresp.ttl = 0s;
        set beresp.uncacheable = true;
    }
    return (deliver);
}
"""


def start_varnish(sim_port, name, storage="malloc,2G", gzip=False):
    """varnishd in the foreground on loopback only: no management port
    (-T none), its working directory (-n) in TMP; as root without a jail
    (-j none), else as the invoking user. Its defaults otherwise (two
    thread pools of 100..5000 threads). gzip: beresp.do_gzip."""
    port = free_port()
    d = os.path.join(TMP, name)
    os.makedirs(d)
    vcl = os.path.join(d, "contacts.vcl")
    with open(vcl, "w") as f:
        f.write(VARNISH_VCL % {"sim": sim_port,
                               "gzip": "        set beresp.do_gzip = true;\n" if gzip else ""})
    return _started(start([VARNISHD, "-F", "-j", "none", "-a", "127.0.0.1:%d" % port,
                           "-T", "none", "-n", os.path.join(d, "work"), "-f", vcl,
                           "-s", storage], name, port=port, cwd=d))


def get(conn, path, key=KEY, headers=None):
    h = {"x-api-key": key}
    h.update(headers or {})
    t0 = time.perf_counter()
    conn.request("GET", path, headers=h)
    r = conn.getresponse()
    body = r.read()
    return time.perf_counter() - t0, r.status, body


def fetch(port, path, key=KEY, headers=None, timeout=30):
    """One GET on a new connection: (status, headers dict lower-cased, body)."""
    cn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"x-api-key": key}
    h.update(headers or {})
    cn.request("GET", path, headers=h)
    r = cn.getresponse()
    body = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    cn.close()
    return r.status, hdrs, body


def wire(port, path, key=KEY, headers=None, timeout=30):
    """One keep-alive GET on a new connection (as wrk sends them), read as
    raw bytes: what the server put on the wire. Returns a dict: status,
    headers (dict, lower-cased), head (bytes of the status line and headers
    with the blank line), wire_body (bytes after the head as sent: chunk
    framing included when chunked), body (the payload, chunking removed,
    still content-coded), chunked (bool)."""
    h = {"Host": "127.0.0.1", "x-api-key": key}
    h.update(headers or {})
    req = "GET %s HTTP/1.1\r\n" % path + "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(req.encode())
    data = bytearray()

    def more():
        got = s.recv(1 << 20)
        if not got:
            sys.exit("bench: ABORT: port %d closed the connection mid-answer (%s)" % (port, path))
        data.extend(got)

    while data.find(b"\r\n\r\n") < 0:
        more()
    end = data.find(b"\r\n\r\n") + 4
    head = bytes(data[:end])
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    chunked = "chunked" in hdrs.get("transfer-encoding", "").lower()
    body, i = bytearray(), end
    if chunked:  # size line, data, CRLF; ends with a 0 size line and CRLF (no trailers)
        while True:
            while data.find(b"\r\n", i) < 0:
                more()
            j = data.find(b"\r\n", i)
            n = int(bytes(data[i:j]).split(b";")[0], 16)
            while len(data) < j + 2 + n + 2:
                more()
            body += data[j + 2:j + 2 + n]
            i = j + 2 + n + 2
            if n == 0:
                break
    else:
        n = int(hdrs.get("content-length", "0"))
        while len(data) < end + n:
            more()
        body, i = data[end:end + n], end + n
    s.close()
    return {"status": status, "headers": hdrs, "head": len(head), "wire_body": i - end,
            "body": bytes(body), "chunked": chunked}


def sim_control(sim_port, method, path):
    """A simulator control request (/__sim/...); its JSON or None."""
    cn = http.client.HTTPConnection("127.0.0.1", sim_port, timeout=10)
    cn.request(method, path)
    r = cn.getresponse()
    body = r.read()
    cn.close()
    if r.status != 200:
        sys.exit("bench: simulator %s %s: %d %r" % (method, path, r.status, body[:200]))
    try:
        return json.loads(body)
    except ValueError:
        return None


def sim_total(sim_port):
    return sim_control(sim_port, "GET", "/__sim/stats")["total"]


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    v = float(m.group(1))
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}[m.group(2)]


def wrk(port, path, threads, conns, seconds, key=KEY, during=None, headers=(), timeout=None):
    """One wrk run; exits loudly on non-2xx answers or socket errors (wrk
    counts an answer slower than its --timeout, 2 s unless `timeout` says
    otherwise ("10s"), as a socket error too).
    during: called once, a second into the run (half of it if shorter);
    what it returns is "during" in the result. headers: more request
    header lines ("Accept-Encoding: gzip").
    Returns {"rps", "p50", "p99" (ms), "requests", "during"}."""
    cmd = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % seconds, "--latency",
           "-H", "x-api-key: " + key] + (["--timeout", timeout] if timeout else [])
    for h in headers:
        cmd += ["-H", h]
    cmd.append("http://127.0.0.1:%d%s" % (port, path))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = None
    if during:
        time.sleep(min(1.0, seconds / 2.0))
        seen = during()
    try:
        out = p.communicate(timeout=seconds + 60)[0]
    except subprocess.TimeoutExpired:
        p.kill()
        sys.exit("bench: ABORT: wrk did not end: " + " ".join(cmd))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m is None:
        sys.exit("bench: wrk gave no figures on port %d:\n%s" % (port, out))
    if re.search(r"Non-2xx", out) or re.search(r"Socket errors", out):
        sys.exit("bench: ABORT: non-2xx answers or socket errors from port %d (%s):\n%s"
                 % (port, " ".join(cmd), out))
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": float(m.group(1)), "requests": reqs, "during": seen,
            "p50": to_ms(re.search(r"\s50%\s+(\S+)", out).group(1)),
            "p99": to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))}


# ---- a process and its children, from /proc ----

def tree(pid):
    """pid and its descendants (nginx's workers, varnishd's child)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids):
    """User + system CPU seconds used so far by pids (all their threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def epoll_fds(pid):
    """How many fds each epoll instance of pid watches, {fd: count}, from
    /proc/PID/fdinfo: one instance per event loop, so (less the loop's own
    listener, eventfd and timer fds) its client connections."""
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) != "anon_inode:[eventpoll]":
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                out[int(fd)] = sum(1 for line in f if line.startswith("tfd:"))
        except OSError:
            pass
    return out


def front_conns(pid, idle):
    """Connections each front loop of a gateway gained since `idle` (an
    epoll_fds result), busiest first. The main loop's instance (the lowest
    fd: it is made first) is left out when there are several."""
    now = epoll_fds(pid)
    fds = sorted(now)
    if len(fds) > 1:
        fds = fds[1:]
    return sorted((now[fd] - idle.get(fd, 0) for fd in fds), reverse=True)


def machine_busy():
    """CPU seconds the whole machine has been busy (user, nice, system,
    irq, softirq: what processes are charged; steal and idle left out)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit_pct=25, max_wait_s=20, probe_s=0.5):
    """Waits (at most max_wait_s) until the machine, idle on our side, is
    busy under limit_pct % of its cores over probe_s: other people's builds
    and tests. Returns the last busy % seen."""
    deadline = time.time() + max_wait_s
    while True:
        b0 = machine_busy()
        time.sleep(probe_s)
        pct = (machine_busy() - b0) / (probe_s * os.cpu_count()) * 100
        if pct < limit_pct or time.time() >= deadline:
            return pct


def status_kb(pid, field):
    """A /proc/PID/status field in kB (VmRSS, RssAnon, VmHWM, ...)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def median(values):
    v = sorted(values)
    n = len(v)
    if n == 0:
        return float("nan")
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def ms(x):
    return "%.3f" % (x * 1000.0)
