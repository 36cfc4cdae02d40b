"""Hostile upstream answers (issue 14, item 7): every answer outside the
contract, with nothing stored and with an expired answer stored. The rules are
in docs/configuration.md, "Upstream answers"; gateway/upstream.c applies them.

  the vendor sends (sim fault)        nothing stored              expired answer stored
  two different Content-Types         502, names the problem      it stands in (fwd=stale)
  two different Content-Lengths       502                         stands in, kept as is
  302 with or without Location        502, no Location relayed    stands in
  304 (nothing conditional asked)     502                         stands in
  204, status 999                     502                         stands in
  the same Content-Type twice         200, one JSON type          refreshed, stored so
  a Content-Type over 255 bytes       200, application/json; charset=utf-8, stored so
  text/html on a JSON array           200, application/json; charset=utf-8, stored so

An answer outside the contract costs one upstream request (never retried).
Framing the simulator cannot produce (obs-fold, Content-Length with
Transfer-Encoding, a NUL, HTTP/0.9, a non-numeric length, 101, a lone interim
1xx, trailers, conflicting Retry-After) comes from a raw socket upstream here.
"""
import base64
import json
import socket
import subprocess
import threading
import time

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a)
run.watch(sim)

JSON_TYPE = "application/json; charset=utf-8"
INVALID, RELAYED = "invalid", "relayed"
REDIRECT = "upstream redirect (302) is not followed"
# (simulator fault kind, what the gateway does, its message or the type relayed)
CASES = [
    ("two-types", INVALID, "upstream sent 2 different Content-Type headers"),
    ("two-lengths", INVALID, "upstream sent 2 different Content-Length headers"),
    ("302", INVALID, REDIRECT),
    ("302-bare", INVALID, REDIRECT),
    ("304", INVALID, "upstream sent a 304 to an unconditional request"),
    ("204", INVALID, "upstream status 204 is outside the contract"),
    ("999", INVALID, "upstream status 999 is outside the contract"),
    ("same-types", RELAYED, JSON_TYPE),
    ("long-type", RELAYED, JSON_TYPE),
    ("html-type", RELAYED, JSON_TYPE),
]


def types(r):
    """Every Content-Type line of a gateway answer."""
    return [v for n, v in r.header_list if n.lower() == "content-type"]


def cache_status(r):
    cs = r.header("cache-status") or ""
    return dict(p.strip().split("=", 1) for p in cs.split(";")[1:] if "=" in p), cs


def export(g):
    """The gateway's stored entries (cache export), by canonical query."""
    out = subprocess.run([a.gateway, "cache", "export", "-", "--cache-dir", g.cache_dir],
                         capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert json.loads(lines[0])["format"] == "contacts-gateway-cache", lines[:1]
    entries = {}
    for line in lines[1:]:
        e = json.loads(line)
        if "end" in e:
            break
        e["body"] = base64.b64decode(e.pop("body_b64"))
        entries[e["query"]] = e
    return entries


def entry_for(entries, q):
    """The entry whose canonical query holds the same parameters as q."""
    want = set(q.split("&"))
    found = [e for k, e in entries.items() if set(k.split("&")) == want]
    assert len(found) == 1, (q, sorted(entries))
    return found[0]


def assert_invalid(r, message, what):
    body = h.json_error(r, 502, "bad_gateway")
    assert body["message"] == message, (what, body)
    assert types(r) == [JSON_TYPE], (what, r.header_list)
    assert r.header("location") is None, (what, r.header_list)
    parts, cs = cache_status(r)
    assert parts.get("fwd") == "miss" and "stored" not in cs, (what, cs)


@run.test
def nothing_stored_each_case_gets_its_documented_answer():
    g = h.start_gateway(a, sim.port, "--ttl", "60")
    try:
        for i, (kind, rule, expect) in enumerate(CASES):
            q = "days=%d&limit=5" % (100 + i)
            good = h.contacts(sim.port, q).body
            h.sim_fault(sim, kind)
            r = h.contacts(g.port, q)
            if rule == INVALID:
                assert_invalid(r, expect, kind)
                # nothing was stored: the next request goes upstream, gets
                # the real answer and stores it
                r = h.contacts(g.port, q)
                assert r.status == 200 and r.body == good, (kind, r)
                assert "fwd=miss; fwd-status=200; stored" in r.header("cache-status"), \
                    (kind, r.headers)
            else:
                assert r.status == 200 and r.body == good, (kind, r)
                assert types(r) == [expect], (kind, r.header_list)
                assert "fwd=miss; fwd-status=200; stored" in r.header("cache-status"), \
                    (kind, r.headers)
            # later hits: the right type, once, and the right bytes
            hit = h.contacts(g.port, q)
            assert hit.status == 200 and hit.body == good, (kind, hit)
            assert types(hit) == [JSON_TYPE], (kind, hit.header_list)
            assert hit.header("cache-status").startswith("contacts-gateway; hit"), \
                (kind, hit.headers)
        # HEAD is refused the same way, without a body
        h.sim_fault(sim, "999")
        r = h.contacts(g.port, "days=130", method="HEAD")
        assert r.status == 502 and r.body == b"", r
        # the first refusal is logged at warn with its cause
        log = g.read_log()
        assert "warn upstream: answer refused" in log and CASES[0][2] in log, g.tail()
    finally:
        h.sim_clear_faults(sim)
        h.stop_gateway(g)


@run.test
def an_expired_stored_answer_stands_in_and_is_never_replaced_by_a_hostile_one():
    g = h.start_gateway(a, sim.port, "--ttl", "1")
    try:
        queries = ["days=%d&limit=4" % (200 + i) for i in range(len(CASES))]
        first = {q: h.contacts(g.port, q) for q in queries}
        for q, r in first.items():
            assert r.status == 200 and "stored" in r.header("cache-status"), (q, r)
        time.sleep(1.2)  # every entry expired (--ttl 1), well within --stale-if-error
        before = export(g)
        for (kind, rule, expect), q in zip(CASES, queries):
            good = first[q]
            h.sim_fault(sim, kind)
            r = h.contacts(g.port, q)
            parts, cs = cache_status(r)
            assert r.status == 200 and r.body == good.body, (kind, r, cs)
            assert types(r) == [JSON_TYPE], (kind, r.header_list)
            assert parts.get("fwd") == "stale", (kind, cs)
            if rule == INVALID:  # the stored answer stands in
                assert parts.get("fwd-status") == "502", (kind, cs)
                assert parts.get("detail") == "stale-if-error" and int(parts["ttl"]) < 0, cs
                assert r.header("etag") == good.header("etag"), (kind, r.headers)
                assert r.header("location") is None, (kind, r.header_list)
            else:  # a clean answer after the rules: stored, with one JSON type
                assert parts.get("fwd-status") == "200" and "stored" in cs, (kind, cs)
        after = export(g)
        for (kind, rule, expect), q in zip(CASES, queries):
            old, new = entry_for(before, q), entry_for(after, q)
            assert new["content_type"] == JSON_TYPE and new["body"] == old["body"], (kind, new)
            if rule == INVALID:
                assert new["stored_ms"] == old["stored_ms"], (kind, "replaced", old, new)
            else:
                assert new["stored_ms"] > old["stored_ms"], (kind, "not refreshed", old, new)
        # later answers (fresh ones for the refreshed entries, new fetches
        # for the others) serve the same bytes with one JSON type
        for (kind, _, _), q in zip(CASES, queries):
            r = h.contacts(g.port, q)
            assert r.status == 200 and r.body == first[q].body, (kind, r)
            assert types(r) == [JSON_TYPE], (kind, r.header_list)
    finally:
        h.sim_clear_faults(sim)
        h.stop_gateway(g)


@run.test
def an_answer_outside_the_contract_is_not_retried():
    g = h.start_gateway(a, sim.port, "--ttl", "0", "--upstream-retries", "2",
                        "--retry-backoff", "10")
    try:
        for kind, rule, expect in CASES:
            if rule != INVALID:
                continue
            h.sim_reset(sim)
            h.sim_fault(sim, kind, count=0)
            assert_invalid(h.contacts(g.port, "days=140"), expect, kind)
            assert h.sim_total(sim) == 1, (kind, h.sim_stats(sim))
        h.sim_clear_faults(sim)
        r = h.contacts(g.port, "days=140")
        assert r.status == 200 and types(r) == [JSON_TYPE], r
    finally:
        h.sim_reset(sim)
        h.stop_gateway(g)


# ---- framing from a raw socket upstream ----

def answer(status_line, *headers, body=b""):
    return (status_line + "\r\n" + "".join(x + "\r\n" for x in headers) + "\r\n").encode() + body


OK = "HTTP/1.1 200 OK"
# days=N selects the answer; (raw bytes, (status, message or Content-Type lines))
RAW = {
    1: (answer(OK, "Content-Type: application/json", " text/html", "Content-Length: 2",
               body=b"[]"),
        (502, "upstream sent a folded header line (obsolete line folding)")),
    2: (answer(OK, "Content-Type: application/json", "Content-Length: 9",
               "Transfer-Encoding: chunked", body=b"2\r\n[]\r\n0\r\n\r\n"),
        (502, "upstream sent both Content-Length and Transfer-Encoding")),
    3: (answer(OK, "Content-Type: application/json\0text/html", "Content-Length: 2",
               body=b"[]"),
        (502, "upstream answer is not valid HTTP: Nul byte in header")),
    4: (b"[]", (502, "upstream answer is not valid HTTP: Received HTTP/0.9 when not allowed")),
    5: (answer(OK, "Content-Type: application/json", "Content-Length: +2", body=b"[]"),
        (502, "upstream sent a Content-Length that is not a decimal number")),
    6: (answer("HTTP/1.1 101 Switching Protocols", "Content-Type: application/json",
               body=b"[]"),
        (502, "upstream status 101 is outside the contract")),
    7: (answer("HTTP/1.1 150 Hold On"), (502, "upstream sent an interim 150 and no final answer")),
    8: (answer("HTTP/1.1 103 Early Hints", "Content-Type: text/html") +
        answer(OK, "Content-Type: application/json", "Content-Length: 2", body=b"[]"),
        (200, ["application/json"])),
    9: (answer(OK, "Content-Type: application/json", "Transfer-Encoding: chunked",
               body=b"2\r\n[]\r\n0\r\nContent-Type: text/html\r\n\r\n"),
        (200, ["application/json"])),
    10: (answer(OK, "Content-Type: application/json", "Content-Length: 2",
                "Content-Length: 2", body=b"[]"),
         (200, ["application/json"])),
    11: (answer(OK, "Content-Type: Application/JSON;Charset=\"UTF-8\"", "Content-Length: 2",
                body=b"[]"),
         (200, ["Application/JSON;Charset=\"UTF-8\""])),
    12: (answer(OK, "Content-Type: application/json; charset", "Content-Length: 2",
                body=b"[]"),
         (200, [JSON_TYPE])),
    13: (answer(OK, "Content-Length: 2", body=b"[]"), (200, [JSON_TYPE])),
    14: (answer("HTTP/1.1 500 Oops", "Content-Type: text/html; charset=utf-8",
                "Content-Length: 4", body=b"<p/>"),
         (500, ["text/html; charset=utf-8"])),
    15: (answer("HTTP/1.1 500 Oops", "Content-Type: text/html; charset", "Content-Length: 4",
                body=b"<p/>"),
         (500, [])),
    16: (answer("HTTP/1.1 307 Temporary Redirect", "Location: http://127.0.0.1:1/",
                "Content-Length: 0"),
         (502, "upstream redirect (307) is not followed")),
    17: (answer("HTTP/1.1 418 I'm a teapot", "Content-Type: application/json",
                "Content-Length: 2", body=b"{}"),
         (502, "upstream status 418 is outside the contract")),
}
# advice headers: conflicting ones are dropped (Retry-After, RateLimit-Reset),
# so is one with a control byte or a Retry-After that is neither seconds nor
# a date; a single clean one, or identical repeats, are relayed (a 429 blocks
# its key: each answer on its own key)
ADVICE = answer("HTTP/1.1 429 Too Many Requests", "Content-Type: application/json",
                "Retry-After: 5", "Retry-After: 7", "X-RateLimit-Limit: 10",
                "X-RateLimit-Limit: 10", "X-RateLimit-Remaining: 0\x01",
                "RateLimit-Reset: 5", "RateLimit-Reset: 6", "RateLimit-Limit: 10, 10;w=1",
                "Content-Length: 2", body=b"{}")
ADVICE_BAD_DELAY = answer("HTTP/1.1 429 Too Many Requests", "Content-Type: application/json",
                          "Retry-After: soon", "Content-Length: 2", body=b"{}")
ADVICE_SINGLE = answer("HTTP/1.1 429 Too Many Requests", "Content-Type: application/json",
                       "Retry-After: 3", "X-RateLimit-Limit: 10", "Content-Length: 2",
                       body=b"{}")


class RawUpstream:
    """An upstream that answers each request with canned bytes chosen by the
    days=N of its query (RAW, or ADVICE for 90, ADVICE_SINGLE for 91,
    ADVICE_BAD_DELAY for 92), then closes the connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(65536)
                if not chunk:
                    return
                data += chunk
            target = data.split(b" ", 2)[1].decode()
            days = int(target.split("days=")[1].split("&")[0])
            out = {90: ADVICE, 91: ADVICE_SINGLE, 92: ADVICE_BAD_DELAY}.get(days) or \
                RAW[days][0]
            c.sendall(out)
            c.shutdown(socket.SHUT_WR)
            time.sleep(0.2)  # let the client read before the close
        except (OSError, ValueError, KeyError, IndexError):
            pass
        finally:
            c.close()


@run.test
def framing_outside_the_contract_from_a_raw_upstream():
    up = RawUpstream()
    g = h.start_gateway(a, 0, "--ttl", "0", upstream="http://127.0.0.1:%d" % up.port)
    try:
        for days, (_, (status, expect)) in sorted(RAW.items()):
            r = h.contacts(g.port, "days=%d" % days)
            if isinstance(expect, str):
                assert r.status == status, (days, r)
                assert_invalid(r, expect, days)
            else:
                assert r.status == status, (days, r)
                assert types(r) == expect, (days, r.header_list)
        r = h.contacts(g.port, "days=90", key=h.KEY_B)
        assert r.status == 429 and r.body == b"{}", r
        names = [n.lower() for n, _ in r.header_list]
        assert "retry-after" not in names and "x-ratelimit-remaining" not in names and \
            "ratelimit-reset" not in names, r.header_list
        assert r.header("x-ratelimit-limit") == "10", r.header_list
        assert r.header("ratelimit-limit") == "10, 10;w=1", r.header_list
        r = h.contacts(g.port, "days=91", key=h.KEY_C)
        assert r.status == 429 and r.header("retry-after") == "3", r.header_list
        assert r.header("x-ratelimit-limit") == "10", r.header_list
        r = h.contacts(g.port, "days=92", key="hostile-key-delta")
        assert r.status == 429 and r.header("retry-after") is None, r.header_list
    finally:
        h.stop_gateway(g)


@run.test
def clean_exit():
    assert sim.stop() == 0, sim.tail()


run.run()
