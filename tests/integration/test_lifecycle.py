"""Signals, bounds and timeouts on the real gateway:

- SIGTERM (and SIGINT) with slow requests in flight (simulator latency 1 s):
  the listener closes at once (new connections refused), the in-flight
  requests still get their 200, then the gateway exits 0; past
  --shutdown-timeout what is still in flight gets 503 shutting_down; a
  request on a connection accepted before the signal and sent just after
  it is answered 200;
- --max-connections 2: a third connection, while two are open, waits in the
  kernel's backlog unserved; once one closes, it is accepted and served;
- a request head over the limits is refused with a 4xx, never a crash;
- --client-timeout 1000: a client that connects and sends nothing, one that
  stalls in the middle of its head, and an idle kept-alive one are closed
  after about a second; a client waiting for a slow upstream is not.
"""
import signal
import socket
import threading
import time

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a)
NO_CACHE = ["--ttl", "0"] if "--ttl" in h.gateway_options(a) else []


def gateway(*extra):
    return h.start_gateway(a, sim.port, *NO_CACHE, *extra)


def refused(port):
    """True if a new TCP connection to port is refused (a reset while the
    listener closes counts as refused too)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except (ConnectionRefusedError, ConnectionResetError):
        return True


def wait_arrived(before, n):
    """Waits until n more requests reached the simulator than `before` (its
    total then): held by its latency, they are in flight at the gateway.
    (in_flight itself may still count requests a previous gateway left.)"""
    h.eventually(lambda: h.sim_total(sim) >= before + n, timeout=5,
                 what="%d request(s) arrived at the simulator" % n)


def drain_scenario(sig, queries, latency_ms=1000, extra=()):
    """Starts a gateway, sends `queries` (held latency_ms by the simulator),
    sends `sig` while they are in flight, checks the listener is closed at
    once, and returns (answers, exit code, seconds from signal to exit)."""
    h.sim_reset(sim)
    g = gateway(*extra)
    try:
        idle = h.connect(g.port)  # a kept-alive idle connection must not delay the exit
        # one upstream request first: upstream connections are then known to
        # be HTTP/1.1 and new requests open their own at once (see
        # test_passthrough's cold-start test)
        assert h.contacts(g.port, "days=2&limit=1", conn=idle).status == 200
        h.sim_latency(sim, latency_ms)
        before = h.sim_total(sim)
        calls = [h.Background(lambda q=q: h.contacts(g.port, q, timeout=15)) for q in queries]
        wait_arrived(before, len(queries))
        t0 = time.time()
        g.signal(sig)
        h.eventually(lambda: refused(g.port), timeout=0.5, what="listener closed after signal")
        answers = [c.result(15) for c in calls]
        rc = g.wait(15)
        took = time.time() - t0
        idle.close()
        return answers, rc, took
    finally:
        h.sim_reset(sim)
        g.stop()


@run.test
def sigterm_lets_in_flight_requests_finish_then_exits_0():
    queries = ["days=30&limit=2", "days=31&limit=3", "days=32", "days=33&limit=1",
               "updated_after=2025-12-01T00:00:00Z&limit=5"]
    answers, rc, took = drain_scenario(signal.SIGTERM, queries)
    for q, r in zip(queries, answers):
        assert r.status == 200, (q, r)
        assert r.body == h.contacts(sim.port, q).body, q
    assert rc == 0, rc
    assert took < 3.0, "exit %.2fs after SIGTERM; in-flight answers took about 1 s" % took


@run.test
def sigint_drains_and_exits_0_too():
    answers, rc, took = drain_scenario(signal.SIGINT, ["days=40&limit=2"])
    assert answers[0].status == 200, answers[0]
    assert rc == 0 and took < 3.0, (rc, took)


@run.test
def sigint_when_idle_exits_0():
    g = gateway()
    assert h.contacts(g.port, "days=3").status == 200
    g.signal(signal.SIGINT)
    assert g.wait(5) == 0


@run.test
def a_request_sent_as_the_drain_begins_is_answered():
    # the connection was accepted before SIGTERM, its request leaves the
    # client just after (0-100 ms): the front must not call itself drained
    # while such a request is on its way (it waits up to 1 s for them)
    statuses = []
    for i in range(8):
        g = gateway()
        try:
            s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
            time.sleep(0.05)  # accepted by now
            g.signal(signal.SIGTERM)
            time.sleep(i * 0.0125)
            s.sendall(b"GET /api/public/contacts?days=%d HTTP/1.1\r\nHost: x\r\n"
                      b"x-api-key: %s\r\n\r\n" % (300 + i, h.KEY_A.encode()))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            statuses.append(data.split(b" ", 2)[1] if data else b"closed")
            assert g.wait(10) == 0
        finally:
            h.stop_gateway(g)
    assert statuses == [b"200"] * 8, statuses


@run.test
def shutdown_timeout_bounds_the_drain():
    answers, rc, took = drain_scenario(signal.SIGTERM, ["days=41"], latency_ms=4000,
                                       extra=("--shutdown-timeout", "500"))
    assert rc == 0, rc
    assert 0.4 <= took < 2.5, "exit %.2fs after SIGTERM with --shutdown-timeout 500" % took
    # documented (docs/configuration.md): what is still in flight gets 503
    h.json_error(answers[0], 503, "shutting_down")


@run.test
def second_signal_stops_at_once():
    h.sim_reset(sim)
    g = gateway("--shutdown-timeout", "10000")
    try:
        h.sim_latency(sim, 8000)
        before = h.sim_total(sim)
        call = h.Background(lambda: h.contacts(g.port, "days=42", timeout=15))
        wait_arrived(before, 1)
        g.signal(signal.SIGTERM)
        time.sleep(0.3)
        assert g.alive(), "exited before the in-flight request was answered"
        t0 = time.time()
        g.signal(signal.SIGTERM)
        rc = g.wait(5)
        assert time.time() - t0 < 2.0
        assert rc >= 0, "killed by signal %d" % -rc
        try:
            call.result(15)
        except Exception:
            pass  # the connection may simply be closed
    finally:
        h.sim_reset(sim)
        g.stop()


@run.test
def max_connections_third_waits_in_the_backlog_while_two_are_open():
    # counted from accept; at the limit the gateway stops accepting and the
    # kernel's backlog holds the next connection (as HAProxy's maxconn)
    g = gateway("--max-connections", "2", "--threads", "1")
    third = None
    try:
        held = [h.connect(g.port) for _ in range(2)]
        for c in held:
            r = h.request(g.port, h.PATH + "?days=5&limit=1", {"x-api-key": h.KEY_A}, conn=c)
            assert r.status == 200, r
        # the third connection while two are open: connected (backlog), not served
        third = socket.create_connection(("127.0.0.1", g.port), timeout=5)
        third.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        third.settimeout(0.7)
        try:
            got = third.recv(100)
        except socket.timeout:
            got = None
        assert got is None, ("served while two connections are open", got)
        # the two open connections still work
        for c in held:
            r = h.request(g.port, "/healthz", conn=c)
            assert r.status == 200, r
        # one closes: the third is accepted and answered
        held[0].close()
        third.settimeout(5)
        got = third.recv(100)
        assert got.startswith(b"HTTP/1.1 200"), got
        held[1].close()
        third.close()
        third = None
        for _ in range(5):
            r = h.contacts(g.port, "days=5&limit=1")
            assert r.status == 200, r
    finally:
        if third:
            third.close()
        h.stop_gateway(g)


@run.test
def max_connections_counts_every_loop_together():
    # two loops, a limit of 4: the kernel hashes connections over the loops'
    # sockets as it likes; every connection under the limit is served
    # whichever loop has it (a split per loop, 2 each, stranded the third
    # one hashed to a loop). At the limit each loop stops accepting after at
    # most one more (the count is shared, each loop pauses itself): of 6,
    # 4 or 5 are served, and the rest once two close.
    g = gateway("--max-connections", "4", "--threads", "2")
    socks = []
    try:
        for trial in range(6):
            socks = [socket.create_connection(("127.0.0.1", g.port), timeout=5)
                     for _ in range(4)]
            for c in socks:
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for c in socks:
                c.settimeout(3)
                got = c.recv(100)
                assert got.startswith(b"HTTP/1.1 200"), (trial, got)
            more = [socket.create_connection(("127.0.0.1", g.port), timeout=5)
                    for _ in range(2)]
            for c in more:
                c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.5)
            waiting = []
            for c in more:
                c.settimeout(0.01)
                try:
                    got = c.recv(100)
                    assert got.startswith(b"HTTP/1.1 200"), got
                except socket.timeout:
                    waiting.append(c)
            assert waiting, ("6 connections served at once at a limit of 4 on 2 loops", trial)
            socks[0].close()
            socks[1].close()
            for c in waiting:  # the loop that has it resumes within 50 ms
                c.settimeout(3)
                got = c.recv(100)
                assert got.startswith(b"HTTP/1.1 200"), (trial, got)
            for c in socks + more:
                c.close()
            socks = []
            time.sleep(0.1)
    finally:
        for c in socks:
            c.close()
        h.stop_gateway(g)


@run.test
def silent_connections_count_and_are_closed_by_the_client_timeout():
    # silent connections count against --max-connections from accept, and
    # are closed (unanswered) by --client-timeout; then others are served
    g = gateway("--max-connections", "2", "--threads", "1", "--client-timeout", "500")
    socks = []
    try:
        for _ in range(2):
            socks.append(socket.create_connection(("127.0.0.1", g.port), timeout=5))
        t0 = time.time()
        for s_ in socks:
            assert s_.recv(1) == b""  # closed by the gateway, unanswered
        assert time.time() - t0 < 3
        assert h.request(g.port, "/healthz").status == 200
    finally:
        for s_ in socks:
            s_.close()
        h.stop_gateway(g)


def head_with(port, extra_headers, target="/healthz"):
    req = ("GET %s HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\n" % (target, h.KEY_A)).encode()
    return h.raw_exchange(port, req + extra_headers + b"\r\n", timeout=5)


@run.test
def oversized_request_heads_are_4xx_not_a_crash():
    g = gateway()
    try:
        seen = []
        cases = [
            ("one 20 KB header", b"x-padding: " + b"p" * 20000 + b"\r\n", "/healthz"),
            ("2000 headers", b"".join(b"x-h%d: v\r\n" % i for i in range(2000)), "/healthz"),
            ("20 KB request line", b"", h.PATH + "?days=1&pad=" + "p" * 20000),
            ("1 MB header", b"x-padding: " + b"p" * (1 << 20) + b"\r\n", "/healthz"),
        ]
        for what, extra, target in cases:
            data, closed = head_with(g.port, extra, target)
            status = h.raw_status(data)
            seen.append((what, status))
            assert status is not None and 400 <= status < 500 or (status is None and closed), \
                (what, data[:200])
            assert g.alive(), "gateway died on " + what
            r = h.contacts(g.port, "days=3&limit=1")
            assert r.status == 200, (what, r)
        # the biggest head within the limits is still served
        data, _ = head_with(g.port, b"Connection: close\r\nx-padding: " + b"p" * 8000 + b"\r\n")
        assert h.raw_status(data) == 200, data[:200]
        print("    observed: %s" % ", ".join("%s -> %s" % (w, s or "closed") for w, s in seen))
        four_xx = [s for _, s in seen[:3]]
        assert all(s in (400, 413, 414, 431) for s in four_xx), seen
    finally:
        h.stop_gateway(g)


@run.test
def max_header_bytes_flag():
    if "--max-header-bytes" not in h.gateway_options(a):
        return
    g = gateway("--max-header-bytes", "2K")
    try:
        r = h.contacts(g.port, "days=3", headers={"x-padding": "p" * 4000})
        assert r.status in (400, 431), r
        assert h.contacts(g.port, "days=3&limit=1").status == 200
    finally:
        h.stop_gateway(g)


def time_to_close(port, send=b"", timeout=6.0):
    """Connects, sends `send`, and measures how long until the gateway closes
    the connection (None if it does not within timeout). Returns (seconds,
    bytes received)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        t0 = time.time()
        if send:
            s.sendall(send)
        got = b""
        while time.time() - t0 < timeout:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return None, got
            except ConnectionResetError:
                return time.time() - t0, got
            if not chunk:
                return time.time() - t0, got
            got += chunk
        return None, got
    finally:
        s.close()


@run.test
def client_timeout_closes_silent_stalled_and_idle_clients():
    g = gateway("--client-timeout", "1000")
    try:
        results = {}

        def measure(name, send):
            results[name] = time_to_close(g.port, send)

        cases = {
            "silent": b"",
            "stalled head": b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
            "idle keep-alive": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        }
        threads = [threading.Thread(target=measure, args=kv, daemon=True) for kv in cases.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        for name, (took, got) in results.items():
            assert took is not None, (name, "not closed within 6 s", got[:100])
            assert 0.8 <= took < 2.5, (name, "closed after %.2fs, client-timeout 1 s" % took)
        assert results["idle keep-alive"][1].startswith(b"HTTP/1.1 200"), results
        assert h.request(g.port, "/healthz").status == 200
    finally:
        h.stop_gateway(g)


@run.test
def client_timeout_does_not_cut_a_request_waiting_for_upstream():
    g = gateway("--client-timeout", "1000")
    try:
        h.sim_latency(sim, 1800)
        try:
            t0 = time.time()
            r = h.contacts(g.port, "days=50&limit=2", timeout=10)
            took = time.time() - t0
        finally:
            h.sim_latency(sim, 0)
        assert r.status == 200, ("a client waiting for the upstream is neither idle nor "
                                 "stalled", r, "after %.2fs" % took)
        assert r.body == h.contacts(sim.port, "days=50&limit=2").body
    finally:
        h.stop_gateway(g)


@run.test
def clean_exit():
    assert sim.stop() == 0, sim.tail()


run.run()
