"""The cache tools (`contacts-gateway cache stats|list|purge|export|import`) on
a directory a gateway is running on: counts and key hashes (never keys), the
canonical queries, purges by tenant, expiry and query prefix that the running
gateway sees at once (misses counted at the simulator), an export that, imported
into a wiped directory, serves the same bytes and ETags without a single
upstream request; a tampered line, an oversized line, a cut-short file and a
bad header; corrupt records; missing, empty, non-directory and foreign-LMDB
directories (exit 2, one clear line)."""
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a)
# long default freshness (valgrind is slow); cursor queries expire at once
gw = h.start_gateway(a, sim.port, "--ttl", "600", "--ttl-cursor", "1")
run.watch(gw)
D = gw.cache_dir
KEYS = (h.KEY_A, h.KEY_B)
HASH_A = hashlib.sha256(h.KEY_A.encode()).hexdigest()
HASH_B = hashlib.sha256(h.KEY_B.encode()).hexdigest()
state = {}
VALGRIND_LINE = re.compile(r"==\d+==")


class Out:
    def __init__(self, p):
        self.rc = p.returncode
        self.out = p.stdout.decode("utf-8", "replace")
        err = p.stderr.decode("utf-8", "replace")
        # a CG_WRAP valgrind's own lines; its findings show in the exit status
        self.err = "".join(l for l in err.splitlines(True) if not VALGRIND_LINE.match(l))

    def __repr__(self):
        return "<exit %s stdout %r stderr %r>" % (self.rc, self.out[-800:], self.err[-800:])


def tool(*args, stdin=b"", cwd=None):
    """Runs `contacts-gateway cache ARGS` (under CG_WRAP too) to completion."""
    cmd = h.WRAP + [a.gateway, "cache"] + list(args)
    try:
        p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60 * h.SLOW,
                           cwd=cwd)
    except subprocess.TimeoutExpired:
        raise AssertionError("still running: %r" % (args,))
    o = Out(p)
    for k in KEYS:  # whatever a tool prints, never an API key
        assert k not in o.out and k not in o.err, (args, "printed a key", o)
    return o


def ok(*args, **kw):
    o = tool(*args, **kw)
    assert o.rc == 0, (args, o)
    return o


def usage_error(*args, must=(), **kw):
    """Exit 2 with `contacts-gateway cache: ...` lines naming every string in must."""
    o = tool(*args, **kw)
    assert o.rc == 2, (args, o)
    assert o.err.startswith("contacts-gateway cache: "), (args, o)
    for s in must:
        assert s in o.err, (args, "does not say", s, o)
    return o


def get(q, key=h.KEY_A, port=None, **kw):
    return h.contacts(port or gw.port, q, key, **kw)


def by_key():
    return h.sim_stats(sim)["by_key"]


def listing(d=None, *extra):
    """list --json: [entry dict]."""
    o = ok("list", "--json", "--cache-dir", d or D, *extra)
    return [json.loads(line) for line in o.out.splitlines()]


def pairs(entries):
    return {(e["key_hash"], e["query"]) for e in entries}


def stats(d=None):
    return json.loads(ok("stats", "--json", "--cache-dir", d or D).out)


WARM = {  # spelled as a client might; canonical forms below
    h.KEY_A: ["days=30&limit=5", "days=7", "limit=2&days=030"],
    h.KEY_B: ["days=9", "days=30&limit=5"],
}
CANON = {
    HASH_A: {"days=30&limit=5", "days=7", "days=30&limit=2"},
    HASH_B: {"days=9", "days=30&limit=5"},
}


@run.test
def warm_two_tenants():
    before = by_key()
    for key, qs in WARM.items():
        for q in qs:
            r = get(q, key)
            assert r.status == 200 and "stored" in r.header("cache-status"), (q, r)
    after = by_key()
    assert after[h.KEY_A] == before[h.KEY_A] + 3 and after[h.KEY_B] == before[h.KEY_B] + 2
    assert "hit" in get("days=30&limit=2", h.KEY_A).header("cache-status")


@run.test
def stats_counts_entries_and_key_hashes_never_keys():
    o = ok("stats", "--cache-dir", D)
    assert "entries          5\n" in o.out, o
    assert "corrupt records  0\n" in o.out and "expired          0\n" in o.out, o
    assert HASH_A in o.out and HASH_B in o.out, o
    assert "oldest stored    20" in o.out and "Z (age " in o.out, o
    s = stats()
    assert s["entries"] == 5 and s["corrupt"] == 0 and s["expired"] == 0, s
    assert s["map_bytes"] >= s["used_bytes"] > 0 and s["body_bytes"] > 0, s
    assert {k["key_hash"]: k["entries"] for k in s["key_hashes"]} == {HASH_A: 3, HASH_B: 2}
    assert 0 <= s["oldest_age_s"] < 300 and s["oldest_stored"].endswith("Z"), s
    assert sum(k["body_bytes"] for k in s["key_hashes"]) == s["body_bytes"]
    # stats beside the running gateway did not disturb it
    assert "hit" in get("days=7").header("cache-status")


@run.test
def list_shows_canonical_queries():
    o = ok("list", "--cache-dir", D)
    lines = o.out.splitlines()
    assert len(lines) == 5, o
    seen = set()
    for line in lines:
        f = line.split()
        assert len(f) == 5, line
        key_hash, age, left, size, query = f
        assert int(age) >= 0 and 0 < int(left) <= 600 and int(size) > 0, line
        seen.add((key_hash, query))
    want = {(k, q) for k, qs in CANON.items() for q in qs}
    assert seen == want, (seen, want)
    entries = listing()
    assert pairs(entries) == want
    assert all(len(e["etag"]) == 16 and not e["expired"] for e in entries), entries
    assert pairs(listing(None, "--key-hash", HASH_B[:8].upper())) == {
        (HASH_B, q) for q in CANON[HASH_B]}
    assert pairs(listing(None, "--query-prefix", "days=30")) == {
        (HASH_A, "days=30&limit=5"), (HASH_A, "days=30&limit=2"), (HASH_B, "days=30&limit=5")}
    both = listing(None, "--query-prefix", "days=30&limit=5", "--key-hash", HASH_A)
    assert pairs(both) == {(HASH_A, "days=30&limit=5")}
    o = ok("list", "--cache-dir", D, "--key-stdin", stdin=(h.KEY_A + "\n").encode())
    assert {l.split()[4] for l in o.out.splitlines()} == CANON[HASH_A], o


@run.test
def purge_one_tenant_the_gateway_misses_for_it_only():
    o = ok("purge", "--cache-dir", D, "--key-hash", HASH_B)
    assert o.out == "purged 2 entries\n", o
    assert pairs(listing()) == {(HASH_A, q) for q in CANON[HASH_A]}
    before = by_key()
    r = get("days=9", h.KEY_B)
    assert r.status == 200 and "fwd=miss" in r.header("cache-status"), r.header("cache-status")
    assert "hit" in get("days=7", h.KEY_A).header("cache-status")
    assert "hit" in get("days=30&limit=5", h.KEY_A).header("cache-status")
    after = by_key()
    assert after[h.KEY_B] == before[h.KEY_B] + 1 and after[h.KEY_A] == before[h.KEY_A]
    # the same by an API key read from stdin, never from the command line
    o = ok("purge", "--cache-dir", D, "--key-stdin", stdin=(h.KEY_B + "\r\n").encode())
    assert o.out == "purged 1 entry\n", o
    assert "fwd=miss" in get("days=9", h.KEY_B).header("cache-status")
    assert "hit" in get("days=9", h.KEY_B).header("cache-status")


@run.test
def purge_expired():
    for key, q in ((h.KEY_A, "updated_after=2025-12-01"), (h.KEY_B, "updated_after=2025-12-02")):
        assert "stored" in get(q, key).header("cache-status")
    total = len(listing())

    def expired():
        return [e for e in listing() if e["expired"]]

    h.eventually(lambda: len(expired()) == 2, timeout=5, step=0.2, what="two expired entries")
    assert {e["query"] for e in expired()} == {"updated_after=2025-12-01T00%3A00%3A00.000Z",
                                                "updated_after=2025-12-02T00%3A00%3A00.000Z"}
    assert all(e["expires_in_s"] < 0 for e in expired())
    assert stats()["expired"] == 2
    o = ok("purge", "--cache-dir", D, "--expired")
    assert o.out == "purged 2 entries\n", o
    assert len(listing()) == total - 2 and not expired()
    assert "hit" in get("days=7").header("cache-status")


@run.test
def purge_by_query_prefix_with_and():
    for q in ("days=11", "days=12&limit=3"):
        assert "stored" in get(q).header("cache-status")
    total = len(listing())
    o = ok("purge", "--cache-dir", D, "--query-prefix", "days=1", "--key-hash", HASH_B[:12])
    assert o.out == "purged 0 entries\n", o  # AND: bravo has no days=1...
    o = ok("purge", "--cache-dir", D, "--query-prefix", "days=1")
    assert o.out == "purged 2 entries\n", o
    left = listing()
    assert len(left) == total - 2 and not [e for e in left if e["query"].startswith("days=1")]
    before = h.sim_total(sim)
    assert "fwd=miss" in get("days=11").header("cache-status")
    assert "hit" in get("days=9", h.KEY_B).header("cache-status")
    assert h.sim_total(sim) == before + 1


@run.test
def purge_refuses_without_a_condition_and_bad_options():
    usage_error("purge", "--cache-dir", D, must=("--all",))
    usage_error("purge", "--cache-dir", D, "--all", "--expired", must=("--all",))
    usage_error("purge", "--cache-dir", D, "--key-hash", "1234567", must=("--key-hash",))
    usage_error("purge", "--cache-dir", D, "--key-hash", "xyz12345", must=("hex",))
    usage_error("purge", "--cache-dir", D, "--key-hash", HASH_A, "--key-stdin")
    usage_error("purge", "--cache-dir", D, "--key-stdin", stdin=b"", must=("--key-stdin",))
    usage_error("purge", "--cache-dir", D, "--key-stdin", stdin=b"x" * 600 + b"\n")
    usage_error("purge", "--cache-dir", D, "--query-prefix", "")
    usage_error("list", "--cache-dir", D, "--all", must=("--all",))
    usage_error("list", "--bogus", must=("unknown option",))
    usage_error("stats", "--cache-dir", must=("needs a value",))
    usage_error("export", "--cache-dir", D, must=("FILE",))
    usage_error("frobnicate", must=("unknown command",))
    o = tool()
    assert o.rc == 2 and "Usage:" in o.err, o
    assert len(listing()) > 0  # nothing was purged by any of these


@run.test
def help_for_every_command():
    o = ok("--help")
    for c in ("stats", "list", "purge", "export", "import", "--key-hash", "--key-stdin",
              "--query-prefix", "--expired", "--all", "--json"):
        assert c in o.out, (c, o)
    for c in ("stats", "list", "purge", "export", "import"):
        o = ok(c, "--help")
        assert o.out.startswith("Usage: contacts-gateway cache " + c), o
        assert "--cache-dir DIR" in o.out and "[default: cache-data]" in o.out, o
    g = subprocess.run([a.gateway, "--help"], capture_output=True, timeout=10).stdout.decode()
    assert "contacts-gateway cache --help" in g
    # the tools' default directory is the gateway's
    line = [l for l in g.splitlines() if "--cache-dir" in l][0]
    assert "[default: cache-data]" in line, line


def read_export(path):
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    assert lines[-1] == b"", "no newline at the end"
    objs = [json.loads(l) for l in lines[:-1]]
    return objs[0], objs[1:-1], objs[-1]


@run.test
def export_wipe_import_restart_serves_the_same_bytes_without_upstream():
    global gw
    entries = listing()
    spelled = {"days=30&limit=2": "limit=2&days=030"}
    key_of = {HASH_A: h.KEY_A, HASH_B: h.KEY_B}
    answers = {}
    for e in entries:
        r = get(spelled.get(e["query"], e["query"]), key_of[e["key_hash"]])
        assert r.status == 200 and "hit" in r.header("cache-status"), (e, r)
        answers[(e["key_hash"], e["query"])] = r
    path = os.path.join(h.tmpdir("export"), "cache.jsonl")
    o = ok("export", path, "--cache-dir", D)
    assert ("exported %d entries" % len(entries)) in o.err, o
    head, rows, end = read_export(path)
    assert head["format"] == "contacts-gateway-cache" and head["version"] == 1, head
    assert head["exported_at"].endswith("Z"), head
    assert end == {"end": True, "entries": len(entries)}, end
    assert len(rows) == len(entries) and os.stat(path).st_mode & 0o777 == 0o600
    for row in rows:
        r = answers[(row["key_hash"], row["query"])]
        assert base64.b64decode(row["body_b64"]) == r.body
        assert '"%s"' % row["etag"] == r.header("etag"), (row["etag"], r.header("etag"))
        assert row["content_type"] == r.header("content-type")
        assert row["expires_ms"] > row["stored_ms"] > 0
    with open(path, "rb") as f:
        text = f.read()
    assert not [k for k in KEYS if k.encode() in text]
    assert not [n for n in os.listdir(os.path.dirname(path)) if ".tmp-" in n]
    o = ok("export", "-", "--cache-dir", D)  # stdout: the same entry lines
    assert o.out.splitlines()[1:] == text.decode().splitlines()[1:]
    state["export"] = path
    state["answers"] = answers

    h.stop_gateway(gw)
    shutil.rmtree(D)
    o = ok("import", path, "--cache-dir", D)
    assert o.out == "imported %d, skipped 0\n" % len(entries), o
    o = ok("import", path, "--cache-dir", D)  # again: the same entries, replaced
    assert o.out == "imported %d, skipped 0\n" % len(entries), o
    assert pairs(listing()) == set(answers)
    before = h.sim_total(sim)
    gw = h.start_gateway(a, sim.port, "--ttl", "600", cache_dir=D)
    run.watch(gw)
    for (key_hash, q), old in answers.items():
        r = get(spelled.get(q, q), key_of[key_hash])
        assert r.status == 200 and r.body == old.body, q
        assert r.header("etag") == old.header("etag"), q
        assert r.header("content-type") == old.header("content-type"), q
        assert "hit" in r.header("cache-status"), (q, r.header("cache-status"))
    assert h.sim_total(sim) == before


def write_lines(name, lines):
    path = os.path.join(h.tmpdir("import"), name)
    with open(path, "wb") as f:
        f.write(b"".join(l + b"\n" for l in lines))
    return path


def export_lines():
    with open(state["export"], "rb") as f:
        return f.read().split(b"\n")[:-1]


@run.test
def import_skips_a_tampered_line_and_imports_the_rest():
    lines = export_lines()
    n = len(lines) - 2
    row = json.loads(lines[2])
    body = bytearray(base64.b64decode(row["body_b64"]))
    body[len(body) // 2] ^= 0x20
    row["body_b64"] = base64.b64encode(bytes(body)).decode()
    lines[2] = json.dumps(row).encode()
    d = h.tmpdir("tampered")
    o = tool("import", write_lines("tampered.jsonl", lines), "--cache-dir", d)
    assert o.rc == 1, o
    assert o.out == "imported %d, skipped 1\n" % (n - 1), o
    assert "tampered.jsonl:3: skipped: " in o.err and "etag" in o.err, o
    assert len(listing(d)) == n - 1
    assert (row["key_hash"], row["query"]) not in pairs(listing(d))
    # other broken lines, each named by number; the good ones still go in
    lines = export_lines()
    bad = [b'{"key_hash":"abc"}', b"not json", json.dumps(dict(
        json.loads(lines[1]), stored_ms=-5)).encode()]
    o = tool("import", write_lines("broken.jsonl", lines[:2] + bad + lines[2:-1] + [
        json.dumps({"end": True, "entries": n + 3}).encode()]), "--cache-dir", h.tmpdir("b"))
    assert o.rc == 1 and o.out == "imported %d, skipped 3\n" % n, o
    for ln in (3, 4, 5):
        assert "broken.jsonl:%d: skipped" % ln in o.err, (ln, o)


@run.test
def import_bounds_lines_and_notices_a_cut_short_file():
    lines = export_lines()
    n = len(lines) - 2
    sizes = [len(base64.b64decode(json.loads(l)["body_b64"])) for l in lines[1:-1]]
    over = [ln for ln, size in enumerate(sizes, 2) if size > 2048]
    assert 0 < len(over) < n, sizes
    junk = b'{"key_hash":"' + b"a" * 200000 + b'"}'  # past the line bound of a 2K body
    path = write_lines("bounded.jsonl", lines[:-1] + [junk, json.dumps(
        {"end": True, "entries": n + 1}).encode()])
    o = tool("import", path, "--cache-dir", h.tmpdir("bounded"), "--max-body-bytes", "2K")
    assert o.rc == 1, o
    assert o.out == "imported %d, skipped %d\n" % (n - len(over), len(over) + 1), o
    for ln in over:
        assert ":%d: skipped: the body is larger than --max-body-bytes" % ln in o.err, (ln, o)
    assert ":%d: skipped: longer than" % (n + 2) in o.err, o
    d = h.tmpdir("cut")  # no end line: every entry in, but exit 1 and a warning
    o = tool("import", write_lines("cut.jsonl", lines[:-1]), "--cache-dir", d)
    assert o.rc == 1 and o.out == "imported %d, skipped 0\n" % n and "cut short" in o.err, o
    o = tool("import", "-", "--cache-dir", h.tmpdir("stdin"),
             stdin=b"".join(l + b"\n" for l in lines))
    assert o.rc == 0 and o.out == "imported %d, skipped 0\n" % n, o


@run.test
def import_refuses_a_bad_header():
    d = os.path.join(h.tmpdir("hdr"), "never-created")
    lines = export_lines()
    usage_error("import", write_lines("other.jsonl", [b'{"format":"other","version":1}'] +
                                      lines[1:]), "--cache-dir", d, must=("not a contacts",))
    usage_error("import", write_lines("v2.jsonl", [
        b'{"format":"contacts-gateway-cache","version":2}'] + lines[1:]), "--cache-dir", d,
        must=("version 2", "newer"))
    usage_error("import", write_lines("body-first.jsonl", lines[1:]), "--cache-dir", d)
    usage_error("import", write_lines("empty.jsonl", []), "--cache-dir", d, must=("empty",))
    usage_error("import", os.path.join(d, "missing.jsonl"), "--cache-dir", d,
                must=("cannot read",))
    assert not os.path.exists(d)


@run.test
def unusable_directories_exit_2_with_a_clear_message():
    base = h.tmpdir("unusable")
    missing = os.path.join(base, "missing")
    empty = h.tmpdir("unusable/empty")
    a_file = os.path.join(base, "a-file")
    foreign = h.tmpdir("unusable/foreign")
    with open(a_file, "wb") as f:
        f.write(b"x")
    with open(os.path.join(foreign, "data.mdb"), "wb") as f:
        f.write(os.urandom(16384))
    out = os.path.join(base, "out.jsonl")
    cases = ((missing, "No such file"), (empty, "holds no cache"), (a_file, "not a directory"),
             (foreign, "not an LMDB file"))
    for d, why in cases:
        for args in (["stats"], ["list"], ["purge", "--all"], ["export", out]):
            o = usage_error(*(args + ["--cache-dir", d]), must=(d, why))
            assert o.err.count("\n") == 1 and o.out == "", o
        assert not os.path.exists(out)
    assert not os.path.exists(missing)
    usage_error("import", state["export"], "--cache-dir", a_file, must=("not a directory",))
    usage_error("import", state["export"], "--cache-dir", foreign, must=("not an LMDB file",))
    # the default directory is ./cache-data
    usage_error("stats", cwd=base, must=("cache-data",))


@run.test
def corrupt_records_counted_listed_skipped_and_purged():
    d = h.tmpdir("corrupt")
    g = h.start_gateway(a, sim.port, cache_dir=d)
    good = get("days=41&limit=1", port=g.port)
    assert good.status == 200
    other = get("days=42&limit=1", key=h.KEY_B, port=g.port)
    h.stop_gateway(g)
    marker = good.json()[0]["id"].encode()
    assert marker not in other.body
    with open(os.path.join(d, "data.mdb"), "r+b") as f:
        data = f.read()
        at = data.find(marker)
        assert at >= 0
        while at >= 0:  # every copy: LMDB leaves old page versions behind
            f.seek(at)
            f.write(b"X")
            at = data.find(marker, at + 1)
    s = stats(d)
    assert s["entries"] == 1 and s["corrupt"] == 1, s
    assert "corrupt records  1\n" in ok("stats", "--cache-dir", d).out
    o = ok("list", "--cache-dir", d)
    assert len(o.out.splitlines()) == 2 and "corrupt record" in o.out, o
    path = os.path.join(d, "..", "corrupt.jsonl")
    o = ok("export", path, "--cache-dir", d)
    assert "skipped a corrupt record" in o.err and "1 corrupt record skipped" in o.err, o
    head, rows, end = read_export(path)
    assert len(rows) == 1 and end["entries"] == 1 and rows[0]["query"] == "days=42&limit=1"
    o = ok("purge", "--cache-dir", d, "--all")
    assert o.out == "purged 2 entries\n", o
    s = stats(d)
    assert s["entries"] == 0 and s["corrupt"] == 0, s


@run.test
def clean_exit():
    h.stop_gateway(gw)
    assert sim.stop() == 0, sim.read_log()[-2000:]


run.run()
