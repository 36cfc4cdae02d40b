"""Signals, bounds and timeouts: SIGTERM drains in-flight requests and exits 0,
the connection limit answers 503, oversized heads are refused, idle clients
are closed."""
import signal
import socket
import threading
import time

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a)


def in_background(fn):
    out = {}

    def wrap():
        try:
            out["r"] = fn()
        except Exception as e:  # reported by the assertion that reads it
            out["e"] = e

    t = threading.Thread(target=wrap)
    t.start()
    return t, out


def sigterm_with_a_request_in_flight(gateway_args, latency_ms, query, while_draining=None):
    """Starts a gateway, sends one request the simulator holds for latency_ms,
    SIGTERMs the gateway while it waits, and returns that request's answer
    once the gateway has exited 0."""
    gw = h.start_gateway(a, sim.port, "--ttl", "0", *gateway_args)
    h.sim_post(sim, "/__sim/latency?ms=%d" % latency_ms)
    try:
        t, out = in_background(lambda: h.contacts(gw.port, query, timeout=10))
        h.eventually(lambda: h.sim_stats(sim)["in_flight"] == 1)
        gw.signal(signal.SIGTERM)
        if while_draining:
            while_draining(gw)
        t.join(10)
        assert "r" in out, out
        assert gw.wait(10) == 0
        return out["r"]
    finally:
        h.sim_post(sim, "/__sim/reset")
        gw.stop()


def refuses_new_connections(gw):
    time.sleep(0.2)
    try:  # the listener is closed at once
        socket.create_connection(("127.0.0.1", gw.port), timeout=1).close()
        raise AssertionError("new connection accepted after SIGTERM")
    except ConnectionRefusedError:
        pass


@run.test
def sigterm_drains_in_flight_then_exits_0():
    r = sigterm_with_a_request_in_flight([], 1000, "days=30&limit=2",
                                         while_draining=refuses_new_connections)
    assert r.status == 200 and len(r.json()) == 2


@run.test
def shutdown_timeout_answers_503():
    r = sigterm_with_a_request_in_flight(["--shutdown-timeout", "300"], 3000, "days=31")
    assert r.status == 503 and r.json()["error"] == "shutting_down"


@run.test
def sigint_exits_0():
    gw = h.start_gateway(a, sim.port)
    assert h.contacts(gw.port, "days=3").status == 200
    gw.signal(signal.SIGINT)
    assert gw.wait(10) == 0


@run.test
def connection_limit():
    gw = h.start_gateway(a, sim.port, "--max-connections", "2")
    socks = []
    try:
        conns = [h.http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5) for _ in range(3)]
        for c in conns[:2]:  # two connections, kept open
            assert h.request(gw.port, "/healthz", conn=c).status == 200
        r = h.request(gw.port, "/healthz", conn=conns[2])
        assert r.status == 503 and r.json()["error"] == "overloaded"
        assert r.header("connection") == "close"
        for c in conns:
            c.close()
        h.eventually(lambda: h.request(gw.port, "/healthz").status == 200)
    finally:
        h.stop_gateway(gw)


@run.test
def oversized_request_head_refused():
    gw = h.start_gateway(a, sim.port, "--max-header-bytes", "2K")
    try:
        r = h.contacts(gw.port, "days=3", headers={"x-padding": "p" * 4000})
        assert 400 <= r.status < 500, r.status
        assert h.contacts(gw.port, "days=3").status == 200
    finally:
        h.stop_gateway(gw)


@run.test
def idle_client_is_closed():
    gw = h.start_gateway(a, sim.port, "--client-timeout", "500")
    try:
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.time()
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        took = time.time() - t0
        assert data.startswith(b"HTTP/1.1 200"), data[:50]
        assert 0.3 < took < 3, took  # kept alive, then closed when idle
        s.close()
    finally:
        h.stop_gateway(gw)



@run.test
def clean_exit():
    assert sim.stop() == 0, sim.read_log()[-2000:]


run.run()
