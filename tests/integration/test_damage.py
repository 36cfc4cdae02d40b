"""A damaged cache directory (issue 14, item 5): data.mdb truncated at every
interesting length, bytes flipped, the disk filling up, the directory
read-only at start and while running. Never a crash, never a wrong byte
served, one clear line each time; `cache check` tells, `cache recover` copies
out every intact entry.

Bodies served are compared byte for byte with what the simulator served for
the same query (through a gateway with an intact cache)."""
import json
import os
import random
import re
import shutil
import subprocess

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a, contacts=2000)
PSIZE = os.sysconf("SC_PAGE_SIZE")
VALGRIND_LINE = re.compile(r"==\d+==")
# a spread of sizes: a few bytes to some hundred KB (LMDB overflow pages)
QUERIES = ["days=%d&limit=%d" % (d, l) for d, l in
           ((1, 1), (2, 3), (3, 10), (4, 40), (5, 100), (6, 300), (7, 500), (8, 2),
            (9, 5), (10, 20), (11, 60), (12, 200))]
TRUNCATED = re.compile(r"^contacts-gateway: cache directory (\S+): data\.mdb is truncated "
                       r"\((\d+) bytes, (\d+) needed\); run 'contacts-gateway cache recover'$")
state = {}


def upstream_total():
    return h.sim_stats(sim)["total"]


def clean_err(p):
    err = p.stderr.decode("utf-8", "replace")
    return [l for l in err.splitlines() if l.strip() and not VALGRIND_LINE.match(l)]


def run_gateway_to_exit(cache_dir, *extra):
    """Starts a gateway that is expected to refuse to start: its exit code and
    stderr lines."""
    cmd = h.WRAP + [a.gateway, "--listen", "127.0.0.1:0", "--upstream",
                    "http://127.0.0.1:%d" % sim.port, "--cache-dir", cache_dir] + list(extra)
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=20 * h.SLOW,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError("the gateway did not exit on a damaged cache: it runs")
    return p.returncode, clean_err(p)


def tool(*args):
    cmd = h.WRAP + [a.gateway, "cache"] + list(args)
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=60 * h.SLOW,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError("still running: %r" % (args,))
    return p.returncode, p.stdout.decode("utf-8", "replace"), clean_err(p)


def fill(cache_dir):
    """A gateway fills cache_dir with every query's answer; returns the
    bodies it served (the simulator's)."""
    # fresh for a day: the scenarios expect hits however slowly they run
    g = h.start_gateway(a, sim.port, "--ttl", "86400", cache_dir=cache_dir)
    bodies = {}
    try:
        for q in QUERIES:
            r = h.contacts(g.port, q)
            assert r.status == 200 and "stored" in r.header("cache-status"), (q, r)
            bodies[q] = r.body
            state["ctype"] = r.header("content-type").encode()
    finally:
        h.stop_gateway(g)
    return bodies


def reference():
    """The intact cache and its bodies, made once."""
    if "dir" not in state:
        d = h.tmpdir("reference")
        state["bodies"] = fill(d)
        state["dir"] = d
        rc, out, err = tool("check", "--json", "--cache-dir", d)
        assert rc == 0, (rc, out, err)
        state["check"] = json.loads(out)
        assert state["check"]["intact"] == len(QUERIES), state["check"]
    return state["dir"], state["bodies"]


def copy_of(name):
    src, _ = reference()
    d = h.tmpdir(name)
    shutil.rmtree(d)
    shutil.copytree(src, d)
    for f in ("lock.mdb", "gateway.lock"):
        try:
            os.unlink(os.path.join(d, f))
        except FileNotFoundError:
            pass
    return d


def serve_offline_and_compare(cache_dir, expect_at_least):
    """An offline gateway on cache_dir: every answer it gives is the
    simulator's body, byte for byte; returns how many it had."""
    _, bodies = reference()
    g = h.start_gateway(a, sim.port, "--offline", cache_dir=cache_dir)
    served = 0
    try:
        for q in QUERIES:
            r = h.contacts(g.port, q)
            if r.status == 200:
                assert r.body == bodies[q], (q, "a wrong byte served", len(r.body))
                assert "hit" in r.header("cache-status"), (q, r.header("cache-status"))
                served += 1
    finally:
        h.stop_gateway(g)
    assert served >= expect_at_least, (served, expect_at_least)
    return served


@run.test
def the_simulator_answers_are_the_reference():
    _, bodies = reference()
    # straight from the simulator, not through a gateway: the same bytes
    for q in QUERIES[:3]:
        r = h.contacts(sim.port, q)
        assert r.status == 200 and r.body == bodies[q], q
    sizes = sorted(len(b) for b in bodies.values())
    assert sizes[-1] > 4 * PSIZE, sizes  # some bodies span overflow pages


def truncation_case(name, length):
    d = copy_of(name)
    path = os.path.join(d, "data.mdb")
    os.truncate(path, length)
    # the gateway: exit 2, one line that says what and what to do
    rc, err = run_gateway_to_exit(d)
    assert rc == 2, (rc, err)
    if not h.WRAP:
        assert len(err) == 1, err
    lines = [l for l in err if TRUNCATED.match(l)]
    assert lines, err
    m = TRUNCATED.match(lines[0])
    assert m.group(1) == d and int(m.group(2)) == length and int(m.group(3)) > length, err
    # every cache tool that opens the store: exit 2, one clear line
    for args in (("stats",), ("list",), ("export", "-"), ("purge", "--all")):
        rc, out, err = tool(*(args + ("--cache-dir", d)))
        assert rc == 2, (args, rc, err)
        assert err and err[0].startswith("contacts-gateway cache: cache directory %s: "
                                         "data.mdb is truncated (" % d), (args, err)
    # check reports, recover copies what is intact
    rc, out, err = tool("check", "--json", "--cache-dir", d)
    if length < PSIZE:  # not even a meta page left: unusable
        assert rc == 2 and "truncated" in " ".join(err), (rc, out, err)
        rc, out, err = tool("recover", "--cache-dir", d, "--to", d + "-new")
        assert rc == 2 and "truncated" in " ".join(err), (rc, err)
        assert not os.path.exists(os.path.join(d + "-new", "data.mdb"))
        return
    assert rc == 1, (rc, out, err)
    c = json.loads(out)
    assert not c["clean"] and c["pages_missing"] > 0 and c["file_bytes"] == length, c
    # the pages cut may hold entries, or only LMDB's own pages
    assert c["corrupt"] == 0 and c["intact"] <= len(QUERIES), c
    rc, text, _ = tool("check", "--cache-dir", d)
    assert rc == 1 and "TRUNCATED" in text and "cache recover" in text, text
    new = d + "-new"
    rc, out, err = tool("recover", "--cache-dir", d, "--to", new)
    assert rc == 1, (rc, out, err)
    m = re.match(r"recovered (\d+) entr", out)
    assert m and int(m.group(1)) == c["intact"], (out, c)
    assert any("truncated" in l for l in err), err
    # the new directory is whole, and serves exactly the intact entries
    rc, out, err = tool("check", "--json", "--cache-dir", new)
    assert rc == 0 and json.loads(out)["intact"] == c["intact"], (rc, out, err)
    served = serve_offline_and_compare(new, c["intact"])
    assert served == c["intact"], (served, c)
    return c["intact"]


@run.test
def truncated_to_nothing():
    truncation_case("trunc-0", 0)


@run.test
def truncated_to_one_page():
    truncation_case("trunc-1page", PSIZE)


@run.test
def truncated_mid_file():
    reference()
    truncation_case("trunc-mid", state["check"]["needed_bytes"] // 2)


@run.test
def truncated_just_before_the_last_page_in_use():
    reference()
    n = truncation_case("trunc-last", state["check"]["needed_bytes"] - PSIZE)
    assert n >= len(QUERIES) // 2, n  # most entries lie before the last page


@run.test
def truncated_one_byte_short():
    reference()
    n = truncation_case("trunc-byte", state["check"]["needed_bytes"] - 1)
    assert n >= len(QUERIES) // 2, n


@run.test
def recover_of_an_intact_cache_copies_everything():
    d = copy_of("whole")
    rc, out, err = tool("recover", "--cache-dir", d, "--to", d + "-new")
    assert rc == 0 and out.startswith("recovered %d entries" % len(QUERIES)), (rc, out, err)
    rc, out, err = tool("recover", "--cache-dir", d, "--to", d + "-new")
    assert rc == 2 and "already holds a cache" in " ".join(err), (rc, err)
    rc, out, err = tool("recover", "--cache-dir", d, "--to", d)
    assert rc == 2, (rc, err)
    serve_offline_and_compare(d + "-new", len(QUERIES))


@run.test
def flipped_bytes_in_bodies_are_refetched_never_served():
    _, bodies = reference()
    d = copy_of("flips")
    path = os.path.join(d, "data.mdb")
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        flipped = []
        for q in QUERIES[::3]:
            # a record is head, canonical query, type, body, checksum: the
            # three together are found in that record only (and its stale
            # copies on free pages: flipped too)
            needle = q.encode() + state["ctype"] + bodies[q][:64]
            at = data.find(needle)
            assert at >= 0, q
            while at >= 0:
                data[at + len(needle) - 3] ^= 0x01
                at = data.find(needle, at + 1)
            flipped.append(q)
        f.seek(0)
        f.write(data)
    before = upstream_total()
    g = h.start_gateway(a, sim.port, cache_dir=d)
    try:
        for q in QUERIES:
            r = h.contacts(g.port, q)
            assert r.status == 200 and r.body == bodies[q], (q, "a wrong byte served")
            want = "fwd=miss" if q in flipped else "hit"
            assert want in r.header("cache-status"), (q, r.header("cache-status"))
        assert upstream_total() == before + len(flipped)
        # one log line for each record refused
        h.eventually(lambda: g.read_log().count("checksum") >= len(flipped),
                     what="a checksum line per flipped record")
        for q in flipped:  # stored again, intact
            assert "hit" in h.contacts(g.port, q).header("cache-status")
    finally:
        h.stop_gateway(g)


@run.test
def random_flips_anywhere_never_crash_nor_serve_a_wrong_byte():
    _, bodies = reference()
    rnd = random.Random(14)
    size = os.path.getsize(os.path.join(reference()[0], "data.mdb"))
    refused = started = 0
    for i in range(10):
        d = copy_of("random-%d" % i)
        path = os.path.join(d, "data.mdb")
        with open(path, "r+b") as f:
            for _ in range(3):
                at = rnd.randrange(2 * PSIZE, size)  # the meta pages aside
                f.seek(at)
                b = f.read(1)
                f.seek(at)
                f.write(bytes([b[0] ^ (1 << rnd.randrange(8))]))
        # refused with one clear line, or started: then every answer is right
        rc, err = None, None
        try:
            g = h.start_gateway(a, sim.port, cache_dir=d)
        except AssertionError as e:
            assert "exited 2" in str(e) and "data.mdb is damaged" in str(e), str(e)
            refused += 1
            continue
        started += 1
        try:
            for q in QUERIES:
                r = h.contacts(g.port, q)
                assert r.status == 200 and r.body == bodies[q], (i, q, "a wrong byte")
        finally:
            h.stop_gateway(g)
        rc, out, err = tool("check", "--cache-dir", d)
        assert rc in (0, 1), (rc, out, err)
    print("    random flips: %d refused at start, %d started and served right"
          % (refused, started))


def as_root():
    return os.geteuid() == 0


def mount(*args):
    p = subprocess.run(["mount"] + list(args), capture_output=True, timeout=20)
    return p.returncode == 0, p.stderr.decode("utf-8", "replace").strip()


def umount(path):
    subprocess.run(["umount", "-l", path], capture_output=True, timeout=20)


@run.test
def a_full_disk_costs_storing_not_serving():
    if not as_root():
        print("    SKIP: mounting a small tmpfs needs root")
        return
    _, bodies = reference()
    d = h.tmpdir("tiny-fs")
    ok, why = mount("-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", d)
    if not ok:
        print("    SKIP: cannot mount a tmpfs here: %s" % why)
        return
    try:
        # a map far larger than the file system under it: writes hit ENOSPC
        big = ["days=%d&limit=1000" % n for n in range(20, 36)]
        want = {q: h.contacts(sim.port, q).body for q in big}
        g = h.start_gateway(a, sim.port, "--cache-size", "64M", cache_dir=d)
        try:
            for q in big + big:  # hits where stored, the upstream otherwise
                r = h.contacts(g.port, q)
                assert r.status == 200 and r.body == want[q], (q, r.status)
            h.eventually(lambda: "could not store" in g.read_log(),
                         what="a log line for the answer that could not be stored")
            assert g.alive()
        finally:
            h.stop_gateway(g)
        rc, out, err = tool("check", "--cache-dir", d)
        assert rc == 0, (rc, out, err)  # what was committed is whole
    finally:
        umount(d)


@run.test
def a_read_only_directory_at_start_is_refused():
    d = copy_of("ro-start")
    if not as_root():
        os.chmod(d, 0o500)
        try:
            rc, err = run_gateway_to_exit(d)
        finally:
            os.chmod(d, 0o700)
        assert rc == 2 and any("Permission denied" in l for l in err), (rc, err)
        return
    ro = h.tmpdir("ro-view")
    ok, why = mount("--bind", d, ro)
    if not ok:
        print("    SKIP: cannot bind-mount here: %s" % why)
        return
    try:
        ok, why = mount("-o", "remount,ro,bind", ro)
        assert ok, why
        rc, err = run_gateway_to_exit(ro)
        assert rc == 2, (rc, err)
        assert len(err) == 1 or h.WRAP, err
        # checked before anything starts (startup_check), or by the store
        assert err[0] in ("contacts-gateway: cache directory %s: Read-only file system" % ro,
                          "contacts-gateway: cache-dir: %s: Read-only file system" % ro), err
        rc, out, err = tool("stats", "--cache-dir", ro)
        assert rc == 2 and "Read-only file system" in " ".join(err), (rc, err)
    finally:
        umount(ro)


@run.test
def made_read_only_while_running_keeps_serving():
    """The kernel refuses to remount a file system read-only while a file on
    it is open for writing (EBUSY), and permissions are checked at open(2):
    neither a chmod nor a read-only mount reaches the files LMDB holds open.
    What can change under a running gateway is the directory as others see
    it: a read-only bind mount over it. The gateway goes on serving and
    storing; a cache tool started then, and a restart, refuse clearly."""
    _, bodies = reference()
    d = h.tmpdir("ro-live")
    g = h.start_gateway(a, sim.port, cache_dir=d)
    try:
        for q in QUERIES[:4]:
            assert h.contacts(g.port, q).body == bodies[q]
        if as_root():
            ok, why = mount("--bind", "-o", "ro", d, d)
            if not ok:
                print("    SKIP (the rest): cannot bind-mount here: %s" % why)
                return
        else:
            os.chmod(d, 0o500)
        try:
            for q in QUERIES:
                r = h.contacts(g.port, q)
                assert r.status == 200 and r.body == bodies[q], q
            assert "hit" in h.contacts(g.port, QUERIES[-1]).header("cache-status")
            rc, out, err = tool("stats", "--cache-dir", d)
            assert rc == 2 and err and err[0].startswith(
                "contacts-gateway cache: cache directory %s: " % d), (rc, err)
            assert g.alive()
        finally:
            if as_root():
                umount(d)
            else:
                os.chmod(d, 0o700)
    finally:
        h.stop_gateway(g)


@run.test
def truncated_while_running_serves_from_upstream():
    """Another process cuts data.mdb under a running gateway: the next lookup
    that reaches a missing page is caught (a SIGBUS inside LMDB, turned into
    a miss), the cache turns itself off, and every answer comes from the
    vendor, right to the byte. No crash; a clean exit."""
    _, bodies = reference()
    d = copy_of("cut-live")
    g = h.start_gateway(a, sim.port, "--cache-sync-interval", "100", cache_dir=d)
    try:
        assert "hit" in h.contacts(g.port, QUERIES[0]).header("cache-status")
        os.truncate(os.path.join(d, "data.mdb"), 2 * PSIZE)
        before = upstream_total()
        for q in QUERIES:
            r = h.contacts(g.port, q)
            assert r.status == 200 and r.body == bodies[q], (q, r.status)
            assert "fwd=miss" in r.header("cache-status"), (q, r.header("cache-status"))
        assert upstream_total() == before + len(QUERIES)
        # the periodic sync sees the shrink too and says so
        h.eventually(lambda: "sync" in g.read_log(), what="a log line from the sync")
        assert g.alive()
    finally:
        h.stop_gateway(g)
    rc, err = run_gateway_to_exit(d)
    assert rc == 2 and TRUNCATED.match(err[0]), (rc, err)


run.run()
