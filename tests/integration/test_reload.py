"""Reload, signals and systemd's protocols on the real gateway (issue 10):

- SIGHUP rereads --config and applies it to what starts from then on: a
  request in flight finishes (200) while the next miss is stored with the new
  TTL; the log level changes; a config that does not parse is refused whole
  (the error names file:line, the running settings stay); a change to a
  setting that needs a restart (listen) is named in one warning and kept;
- SIGUSR1 reopens the logs and switches nothing; SIGUSR2 is ignored;
- sd_notify: READY=1 once listening, RELOADING=1 (with MONOTONIC_USEC) then
  READY=1 around a reload, STOPPING=1 on SIGTERM, WATCHDOG=1 when
  WATCHDOG_USEC is set, all on a NOTIFY_SOCKET the test listens on;
- socket activation: with LISTEN_FDS/LISTEN_PID the gateway accepts on the
  socket it inherits (fd 3) instead of binding; a restart on that socket
  (the old process drains, the new one starts on the same socket) loses no
  request: a client loop across it sees only 200s;
- --takeover without systemd: a new gateway on the same cache directory
  takes the running one's listening sockets over DIR/gateway.sock, the old
  one drains and exits by itself, the new one serves from the same sockets
  (even with another --threads): concurrent clients across it see only
  200s; with no gateway running, --takeover is a normal start.
"""
import os
import signal
import socket
import threading
import time

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a)
WORK = h.tmpdir("reload")


def write_conf(name, text):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def base_conf(cache, extra=""):
    return ("upstream = http://127.0.0.1:%d\ncache-dir = %s\nupstream-retries = 0\n"
            "breaker-threshold = 0\nnew-key-rate = off\n%s" % (sim.port, cache, extra))


def ttl_of(r):
    cs = r.header("cache-status") or ""
    for part in cs.split(";"):
        part = part.strip()
        if part.startswith("ttl="):
            return int(part[4:])
    raise AssertionError("no ttl in %r" % cs)


def start_with(conf, *extra, env=None, pass_fds=(), wrap=None):
    cmd = h.WRAP + (wrap or []) + [a.gateway, "--config", conf, "--listen", "127.0.0.1:0"]
    return h.Proc(cmd + list(extra), "gateway", env=env, pass_fds=pass_fds)


@run.test
def sighup_applies_new_ttl_and_keeps_the_request_in_flight():
    cache = h.tmpdir("c1")
    conf = write_conf("one.conf", base_conf(cache, "ttl = 60\n"))
    g = start_with(conf)
    try:
        r = h.contacts(g.port, "days=11")
        assert r.status == 200 and 50 <= ttl_of(h.contacts(g.port, "days=11")) <= 60
        h.sim_latency(sim, 1000)
        slow = h.Background(lambda: h.contacts(g.port, "days=12", timeout=20))
        h.eventually(lambda: h.sim_stats(sim)["in_flight"] >= 1, what="the slow request upstream")
        write_conf("one.conf", base_conf(cache, "ttl = 5\nlog-level = debug\n"))
        g.signal(signal.SIGHUP)
        h.eventually(lambda: "reload: settings from" in g.read_log(), what="the reload")
        r = slow.result(20)
        assert r.status == 200, ("a request in flight across a reload", r)
        h.sim_latency(sim, 0)
        # the next miss is stored with the new TTL; the old entry keeps its own
        assert h.contacts(g.port, "days=13").status == 200
        assert ttl_of(h.contacts(g.port, "days=13")) <= 5
        assert ttl_of(h.contacts(g.port, "days=11")) > 40
        # the log level changed too
        h.contacts(g.port, "days=14")
        h.eventually(lambda: " debug " in g.read_log(), what="debug lines after the reload")
    finally:
        h.sim_latency(sim, 0)
        h.stop_gateway(g)


@run.test
def a_bad_config_is_refused_whole_and_the_old_settings_stay():
    cache = h.tmpdir("c2")
    conf = write_conf("two.conf", base_conf(cache, "ttl = 60\n"))
    g = start_with(conf)
    try:
        assert h.contacts(g.port, "days=21").status == 200
        write_conf("two.conf", base_conf(cache, "ttl = 5\nupstream-rate = fast\n"))
        g.signal(signal.SIGHUP)
        h.eventually(lambda: "reload:" in g.read_log(), what="the reload attempt")
        log = g.read_log()
        assert " error reload: %s:" % conf in log and "upstream-rate" in log, log[-800:]
        assert "keeping the running settings" in log
        assert g.alive()
        # ttl 5 was in the same (refused) file: not applied
        assert h.contacts(g.port, "days=22").status == 200
        assert ttl_of(h.contacts(g.port, "days=22")) > 40
        # a setting that needs a restart is named and kept (cache-size: listen
        # is also given on the command line, which beats the file)
        write_conf("two.conf", base_conf(cache, "ttl = 60\ncache-size = 64M\n"))
        g.signal(signal.SIGHUP)
        h.eventually(lambda: "cannot change without a restart" in g.read_log(),
                     what="the warning")
        assert "reload: cache-size cannot change" in g.read_log(), g.tail()
        assert h.request(g.port, "/healthz").status == 200
    finally:
        h.stop_gateway(g)


@run.test
def sigusr1_reopens_logs_and_sigusr2_is_ignored():
    cache = h.tmpdir("c3")
    g = start_with(write_conf("three.conf", base_conf(cache)))
    try:
        g.signal(signal.SIGUSR1)
        g.signal(signal.SIGUSR2)
        h.eventually(lambda: "SIGUSR2: ignored" in g.read_log(), what="SIGUSR2 handled")
        h.eventually(lambda: "SIGUSR1: logs reopened" in g.read_log(), what="SIGUSR1 handled")
        assert g.alive() and h.contacts(g.port, "days=31").status == 200
        assert "offline:" not in g.read_log()
    finally:
        h.stop_gateway(g)


class NotifySocket:
    """A NOTIFY_SOCKET like systemd's: an AF_UNIX datagram socket whose
    messages are collected by a thread."""

    def __init__(self):
        self.path = os.path.join(WORK, "notify-%d.sock" % os.getpid())
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(self.path)
        self.s.settimeout(0.2)
        self.msgs = []
        self.done = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.done:
            try:
                self.msgs.append(self.s.recv(4096).decode())
            except socket.timeout:
                pass
            except OSError:
                return

    def has(self, text):
        return any(text in m for m in self.msgs)

    def close(self):
        self.done = True
        self.t.join(2)
        self.s.close()


@run.test
def sd_notify_ready_reloading_stopping_and_watchdog():
    ns = NotifySocket()
    cache = h.tmpdir("c4")
    conf = write_conf("four.conf", base_conf(cache))
    env = dict(os.environ, NOTIFY_SOCKET=ns.path, WATCHDOG_USEC="400000")
    try:
        g = start_with(conf, env=env)
        h.eventually(lambda: ns.has("READY=1"), what="READY=1")
        h.eventually(lambda: sum(m == "WATCHDOG=1" for m in ns.msgs) >= 3,
                     what="WATCHDOG=1 every 200 ms")
        g.signal(signal.SIGHUP)
        h.eventually(lambda: ns.has("RELOADING=1"), what="RELOADING=1")
        reloading = [m for m in ns.msgs if "RELOADING=1" in m][0]
        assert "MONOTONIC_USEC=" in reloading, reloading
        h.eventually(lambda: [m for m in ns.msgs if "READY=1" in m].__len__() >= 2,
                     what="READY=1 after the reload")
        rc = g.stop()
        assert rc == 0, g.tail()
        assert ns.has("STOPPING=1"), ns.msgs
    finally:
        ns.close()


def activated(listener, conf, *extra, wait_listen=True):
    """A gateway started as systemd would with socket activation: the
    listening socket as fd 3, LISTEN_FDS=1, LISTEN_PID its own pid (set by
    the shell that execs it)."""
    env = dict(os.environ, LISTEN_FDS="1")
    fd = listener.fileno()
    # the child gets the socket at fd 3: dup it there in the shell
    cmd = ["/bin/sh", "-c", 'exec 3<&%d; export LISTEN_PID=$$; exec "$@"' % fd, "sh"]
    return h.Proc(cmd + h.WRAP + [a.gateway, "--config", conf, "--listen", "127.0.0.1:0"]
                  + list(extra), "gateway", env=env, pass_fds=(fd,),
                  wait_listen=wait_listen)


@run.test
def socket_activation_and_a_restart_that_loses_no_request():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    cache = h.tmpdir("c5")
    conf = write_conf("five.conf", base_conf(cache, "ttl = 60\n"))
    g = activated(listener, conf)
    try:
        assert "socket from systemd" in g.read_log(), g.tail()
        assert h.contacts(port, "days=51").status == 200
        stop = threading.Event()
        seen = []

        def client():
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = h.contacts(port, "days=%d" % (52 + i % 20), timeout=30)
                    seen.append(r.status)
                except Exception as e:  # a refusal or a reset would show here
                    seen.append(repr(e))
                time.sleep(0.01)

        t = threading.Thread(target=client, daemon=True)
        t.start()
        time.sleep(0.5)
        assert g.stop() == 0  # drains; the socket stays open in this process
        g = activated(listener, conf)  # same socket, same cache
        time.sleep(0.5)
        stop.set()
        t.join(30)
        bad = [x for x in seen if x != 200]
        assert seen and not bad, ("answers across the restart", len(seen), bad[:5])
        print("    %d requests across the restart, all 200" % len(seen))
    finally:
        h.stop_gateway(g)
        listener.close()


@run.test
def takeover_restart_loses_no_request():
    cache = h.tmpdir("c6")
    conf = write_conf("six.conf", base_conf(cache, "ttl = 60\n"))
    # nothing to take over: a normal start that offers its sockets
    old = start_with(conf, "--threads", "2", "--takeover")
    new = None
    try:
        assert "no gateway runs on" in old.read_log(), old.tail()
        assert os.path.exists(os.path.join(cache, "gateway.sock"))
        port = old.port
        assert h.contacts(port, "days=61").status == 200
        stop = threading.Event()
        seen = []
        lock = threading.Lock()

        def client(n):
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = h.contacts(port, "days=%d" % (62 + (n * 7 + i) % 20), timeout=30)
                    got = r.status
                except Exception as e:  # a refusal or a reset would show here
                    got = repr(e)
                with lock:
                    seen.append(got)
                time.sleep(0.005)

        ts = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(4)]
        for t in ts:
            t.start()
        time.sleep(0.5)
        before = len(seen)
        # another thread count: the two sockets go to one loop
        new = start_with(conf, "--threads", "1", "--takeover")
        assert old.wait(15) == 0, old.tail()
        assert new.port == port, (new.port, port)
        time.sleep(0.5)
        stop.set()
        for t in ts:
            t.join(30)
        bad = [x for x in seen if x != 200]
        assert len(seen) > before and not bad, ("answers across the takeover",
                                                len(seen), bad[:5])
        assert "handover: 2 listening socket(s) handed to a new gateway" in old.read_log(), \
            old.tail()
        assert "sockets handed over" in new.read_log(), new.tail()
        # the new one offers in turn; the old one's socket name is the new one's
        assert os.path.exists(os.path.join(cache, "gateway.sock"))
        r = h.contacts(port, "days=61")
        assert r.status == 200 and "hit" in (r.header("cache-status") or ""), r.headers
        print("    %d requests from 4 clients across the takeover, all 200" % len(seen))
    finally:
        h.stop_gateway(old)
        if new is not None:
            h.stop_gateway(new)


@run.test
def takeover_is_refused_with_systemds_socket():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    cache = h.tmpdir("c7")
    conf = write_conf("seven.conf", base_conf(cache))
    g = activated(listener, conf, "--takeover", wait_listen=False)
    try:
        assert g.wait(10) == 2
        assert "systemctl restart needs no --takeover" in g.read_log(), g.tail()
    finally:
        listener.close()


@run.test
def clean_exit():
    assert sim.stop() == 0, sim.tail()


run.run()
