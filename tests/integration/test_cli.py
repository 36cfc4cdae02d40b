"""The command line and the config file: --help lists every option with its
bounds, -v/-V/--version, -t/--check-config, every bad option or value is one
stderr line `contacts-gateway: ...` and exit status 2 (never a crash, never a
listening gateway; also an unresolvable or busy listen address and a cache-dir
that is a file), durations with units, boolean flags with a word, values from
a config file take effect, flags override the file whatever their order,
config errors name the file (and the line; both lines for a repeated key), a
credential in --upstream is never printed, and an exposed admin token is
warned about."""
import os
import re
import socket
import subprocess

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a)
WORK = h.tmpdir("cli")  # the cwd of every gateway run here (default cache-dir is relative)
NO_CACHE = ["--ttl", "0"] if "--ttl" in h.gateway_options(a) else []

SPEC_OPTIONS = ["--config", "--listen", "--upstream", "--upstream-timeout", "--connect-timeout",
                "--max-connections", "--max-body-bytes", "--client-timeout",
                "--shutdown-timeout", "--log-level", "--help", "--version",
                # named by the cache, protection and outage issues
                "--cache-dir", "--cache-size", "--ttl", "--upstream-rate", "--upstream-burst",
                "--upstream-concurrency", "--queue-limit", "--queue-timeout",
                "--upstream-retries", "--stale-while-revalidate", "--stale-if-error",
                "--offline", "--admin-listen", "--admin-token"]


def gw(*args, timeout=10):
    """Runs the gateway to completion (killed after `timeout` s)."""
    try:
        return subprocess.run([a.gateway] + list(args), capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=WORK)
    except subprocess.TimeoutExpired:
        raise AssertionError("still running after %ds: %r (it should have exited)" %
                             (timeout, args))


def one_line_exit_2(args, must_name=(), timeout=10):
    """Asserts exit status 2 and exactly one stderr line starting
    `contacts-gateway: ` and naming every string in must_name."""
    r = gw(*args, timeout=timeout)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2, (args, "exit", r.returncode, err[-500:])
    assert err.startswith("contacts-gateway: "), (args, err[-500:])
    assert err.count("\n") == 1 and err.endswith("\n"), (args, "not one line", err[-500:])
    for s in must_name:
        assert s in err, (args, "does not name", s, err)
    assert r.stdout == b"", (args, r.stdout[:200])
    return err


def conf(name, text):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def start(args):
    """A gateway from a raw argument list, run in WORK."""
    cmd = h.WRAP + [a.gateway] + list(args)
    old = os.getcwd()
    os.chdir(WORK)
    try:
        return h.Proc(cmd, "gateway")
    finally:
        os.chdir(old)


@run.test
def help_lists_every_option():
    r = gw("--help")
    assert r.returncode == 0, r.returncode
    text = r.stdout.decode()
    missing = [o for o in SPEC_OPTIONS if not re.search(re.escape(o) + r"\b(?!-)", text)]
    assert not missing, ("not in --help", missing)
    assert r.stderr == b"", r.stderr


@run.test
def the_example_config_in_deploy_is_accepted():
    here = os.path.dirname(os.path.abspath(__file__))
    example = os.path.join(here, "..", "..", "deploy", "contacts-gateway.conf")
    with open(example) as f:
        text = f.read()
    assert "upstream-rate" in text and "stale-if-error" in text
    g = start(["--config", conf("example.conf", text), "--listen", "127.0.0.1:0",
               "--cache-dir", os.path.join(WORK, "example-cache"),
               "--upstream", "http://127.0.0.1:%d" % sim.port])
    try:
        assert h.contacts(g.port, "days=30&limit=1").status == 200
    finally:
        h.stop_gateway(g)


@run.test
def version():
    r = gw("--version")
    assert r.returncode == 0, r.returncode
    assert re.fullmatch(r"contacts-gateway \d+\.\d+\.\d+\n", r.stdout.decode()), r.stdout
    assert r.stderr == b"", r.stderr


BAD = [
    ["--nope"], ["--nope", "1"], ["-x"], ["serve"], ["--"],
    ["--listen"], ["--upstream"], ["--upstream-timeout"], ["--log-level"], ["--config"],
    ["--max-connections"],
    ["--max-connections", "0"], ["--max-connections", "abc"], ["--max-connections", "-1"],
    ["--max-connections", "1.5"], ["--max-connections", ""],
    ["--max-connections", "99999999999999999999999"],
    ["--listen", "nohost"], ["--listen", "127.0.0.1"], ["--listen", "127.0.0.1:99999"],
    ["--listen", "127.0.0.1:-1"], ["--listen", "127.0.0.1:abc"], ["--listen", ""],
    ["--upstream", "ftp://x"], ["--upstream", "not a url"], ["--upstream", ""],
    ["--upstream", "http://"],
    ["--log-level", "loud"], ["--log-level", ""],
    ["--max-body-bytes", "-1"], ["--max-body-bytes", "abc"], ["--max-body-bytes", "12Q"],
    ["--max-body-bytes", "0"],
    ["--upstream-timeout=abc"], ["--listen=nohost"],
]
for opt in ("--upstream-timeout", "--connect-timeout", "--client-timeout", "--shutdown-timeout"):
    BAD += [[opt, "-1"], [opt, "-5000"], [opt, "abc"], [opt, "1.5"], [opt, ""], [opt, "10 s"],
            [opt, "10sec"], [opt, "10S"], [opt, "1.5s"], [opt, "-1s"], [opt, "2h"], [opt, "ms"]]
for opt in ("--ttl", "--stale-if-error", "--stale-while-revalidate", "--ttl-wide"):
    BAD += [[opt, "1500ms"], [opt, "400d"], [opt, "1.5"], [opt, "5x"]]
BAD += [
    # a value that starts with -- is a missing value
    ["--ttl", "--listen", "127.0.0.1:0"], ["--upstream", "--offline"],
    ["--offline", "maybe"], ["--offline=maybe"],
    ["--listen", "nohost.invalid:8080"],
    ["--upstream-ca-file", "/nonexistent/ca.pem"], ["--upstream-ca-file", "/"],
    ["--cache-dir", "/dev/null"], ["--cache-dir", "/dev/null/cache"],
]


@run.test
def bad_options_are_one_line_and_exit_2():
    wrong = []
    for args in BAD:
        # a listen address that would work, so an accepted value shows as a
        # gateway that starts (and is killed after 10 s) rather than a bind error
        full = (["--listen", "127.0.0.1:0"] if "--listen" not in " ".join(args) else []) + args
        try:
            one_line_exit_2(full)
        except AssertionError as e:
            wrong.append(str(e)[:300])
    assert not wrong, "%d of %d:\n      %s" % (len(wrong), len(BAD), "\n      ".join(wrong))


@run.test
def config_file_value_takes_effect():
    port = h.free_port()
    path = conf("good.conf",
                "# the gateway's settings\n"
                "\n"
                "listen = 127.0.0.1:%d\n"
                "   # an indented comment\n"
                "upstream=http://127.0.0.1:%d\n"
                "upstream-timeout   =   800   \n"
                "upstream-retries = 0\n"
                "\n" % (port, sim.port))
    g = start(["--config", path] + NO_CACHE)
    try:
        assert g.port == port, ("listen from the file not used", g.port, port)
        r = h.contacts(g.port, "days=30&limit=1")
        assert r.status == 200 and len(r.json()) == 1, r  # upstream from the file
        # 800 ms from the file against a 2 s answer: 504 (the default 30 s would
        # wait and relay the 200). No wall-clock bound: the machine is shared.
        h.sim_latency(sim, 2000)
        try:
            r = h.contacts(g.port, "days=31&limit=1")
        finally:
            h.sim_latency(sim, 0)
        h.json_error(r, 504, "gateway_timeout")
    finally:
        h.stop_gateway(g)


@run.test
def flags_override_the_file_in_either_order():
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    path = conf("override.conf",
                "listen = 127.0.0.1:%d\nupstream = http://127.0.0.1:%d\n"
                "upstream-timeout = 500\nlog-level = warn\n" % (taken, sim.port))
    try:
        for args in (["--config", path, "--listen", "127.0.0.1:0", "--upstream-timeout", "5000",
                      "--log-level", "info"],
                     ["--listen", "127.0.0.1:0", "--upstream-timeout", "5000",
                      "--log-level", "info", "--config", path]):
            # the listening line is logged at info: seeing it shows the flag won
            g = start(args + NO_CACHE)
            try:
                assert g.port != taken
                h.sim_latency(sim, 1000)
                try:
                    r = h.contacts(g.port, "days=30&limit=1")
                finally:
                    h.sim_latency(sim, 0)
                assert r.status == 200, ("--upstream-timeout 5000 should beat the file's 500", r)
            finally:
                h.stop_gateway(g)
    finally:
        blocker.close()


@run.test
def every_option_in_help_is_a_config_key_with_its_default():
    text = gw("--help").stdout.decode()
    settings = re.findall(r"^\s*--([a-z][a-z0-9-]*)(?: \S+)?\s.*\[default: ([^\]]+)\]",
                          text, re.M)
    names = {n for n, _ in settings}
    for o in SPEC_OPTIONS:  # the admin endpoint is off unless set: no default
        if o not in ("--config", "--help", "--version", "--admin-listen", "--admin-token"):
            assert o[2:] in names, ("no default shown for", o)
    override = {"listen": "127.0.0.1:0", "upstream": "http://127.0.0.1:%d" % sim.port,
                "cache-dir": os.path.join(WORK, "cache-defaults")}
    lines = ["%s = %s" % (n, override.get(n, v)) for n, v in settings]
    path = conf("defaults.conf", "\n".join(lines) + "\n")
    g = start(["--config", path])
    try:
        r = h.contacts(g.port, "days=30&limit=1")
        assert r.status == 200, r
    finally:
        h.stop_gateway(g)


@run.test
def equals_form_of_flags():
    g = start(["--listen=127.0.0.1:0", "--upstream=http://127.0.0.1:%d" % sim.port] + NO_CACHE)
    try:
        assert h.contacts(g.port, "days=30&limit=1").status == 200
    finally:
        h.stop_gateway(g)


@run.test
def config_errors_name_the_file_and_line():
    def line_named(err, path, n):
        return ("%s:%d" % (path, n) in err) or (path in err and re.search(r"line %d\b" % n, err))

    path = conf("unknown.conf", "# comment\nlisten = 127.0.0.1:0\n\nbogus-key = 1\n")
    err = one_line_exit_2(["--config", path], must_name=(path, "bogus-key"))
    assert line_named(err, path, 4), err
    cases = [
        ("max-connections = lots\n", 1),
        ("listen = 127.0.0.1:0\nmax-connections = 0\n", 2),
        ("upstream = ftp://x\n", 1),
        ("log-level = loud\n", 1),
        ("\n\nupstream-timeout = -1\n", 3),
        ("client-timeout = abc\n", 1),
        ("listen\n", 1),
        ("listen 127.0.0.1:0\n", 1),
        ("listen =\n", 1),
        ("= 5\n", 1),
    ]
    wrong = []
    for i, (text, n) in enumerate(cases):
        p = conf("bad-%d.conf" % i, text)
        try:
            err = one_line_exit_2(["--config", p], must_name=(p,))
            assert line_named(err, p, n), ("no line %d" % n, err)
        except AssertionError as e:
            wrong.append("%r: %s" % (text, str(e)[:300]))
    assert not wrong, "\n      ".join(wrong)


@run.test
def missing_or_unreadable_config_file():
    missing = os.path.join(WORK, "nonexistent", "gw.conf")
    one_line_exit_2(["--config", missing], must_name=(missing,))
    one_line_exit_2(["--listen", "127.0.0.1:0", "--config", missing], must_name=(missing,))
    a_dir = h.tmpdir("cli-dir-as-config")
    one_line_exit_2(["--config", a_dir], must_name=(a_dir,))


@run.test
def a_bad_value_fails_whichever_side_it_is_on():
    good = conf("good2.conf", "listen = 127.0.0.1:0\n")
    one_line_exit_2(["--config", good, "--max-connections", "0"])
    one_line_exit_2(["--max-connections", "0", "--config", good])
    # a bad value in the file is an error even when a flag sets the same key
    bad = conf("bad2.conf", "max-connections = 0\n")
    one_line_exit_2(["--config", bad, "--max-connections", "5", "--listen", "127.0.0.1:0"],
                    must_name=(bad,), timeout=3)


def check(*args, timeout=10):
    """Runs `contacts-gateway -t ARGS`; returns the CompletedProcess."""
    return gw("-t", *args, timeout=timeout)


def stderr_lines(r):
    return [l for l in r.stderr.decode("utf-8", "replace").splitlines() if l]


@run.test
def version_flags():
    outs = set()
    for flag in ("-v", "-V", "--version"):
        r = gw(flag)
        assert r.returncode == 0 and r.stderr == b"", (flag, r)
        outs.add(r.stdout)
    assert len(outs) == 1, outs
    assert re.fullmatch(rb"contacts-gateway \d+\.\d+\.\d+\n", outs.pop())


@run.test
def check_config_validates_and_touches_nothing():
    cache = os.path.join(WORK, "never-made", "cache")
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        # binds nothing: a port in use is no error for -t (only a start binds)
        port = blocker.getsockname()[1]
        for flag in ("-t", "--check-config"):
            r = gw(flag, "--listen", "127.0.0.1:%d" % port, "--cache-dir", cache)
            assert r.returncode == 0, r
            assert r.stdout == b"configuration ok\n", r.stdout
            assert r.stderr == b"", r.stderr
    finally:
        blocker.close()
    assert not os.path.exists(os.path.dirname(cache)), "-t created the cache directory"
    # the example config as shipped, with its cache-dir moved somewhere writable
    here = os.path.dirname(os.path.abspath(__file__))
    example = os.path.join(here, "..", "..", "deploy", "contacts-gateway.conf")
    r = check("--config", example, "--cache-dir", cache)
    assert r.returncode == 0 and r.stdout == b"configuration ok\n", r
    # errors: the same one line as a start, on stderr, exit 2, nothing on stdout
    bad = conf("check-bad.conf", "ttl = 5\nttl = 6\n")
    one_line_exit_2(["-t", "--config", bad], must_name=(bad + ":2:", "line 1"))
    one_line_exit_2(["--check-config", "--cache-dir", "/dev/null"], must_name=("cache-dir",))
    one_line_exit_2(["-t", "--listen", "nohost.invalid:80"], must_name=("nohost.invalid",))
    one_line_exit_2(["-t", "--max-connections", "0"], must_name=("max-connections",))
    # -t takes no value: the flag after it is read as usual
    r = check("--ttl", "5m", "--cache-dir", cache)
    assert r.returncode == 0, r


@run.test
def a_flag_without_its_value_is_named():
    err = one_line_exit_2(["--ttl", "--listen", "127.0.0.1:0"])
    assert err == "contacts-gateway: --ttl needs a value\n", err
    err = one_line_exit_2(["--listen", "127.0.0.1:0", "--cache-dir"])
    assert err == "contacts-gateway: --cache-dir needs a value\n", err


@run.test
def boolean_flags_take_an_optional_word():
    g = start(["--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:%d" % sim.port,
               "--cache-dir", os.path.join(WORK, "bool-cache"), "--offline", "false",
               "--offline-when-open", "no"] + NO_CACHE)
    try:
        r = h.contacts(g.port, "days=30&limit=1")
        assert r.status == 200, ("--offline false must be online", r)
    finally:
        h.stop_gateway(g)
    g = start(["--listen", "127.0.0.1:0", "--offline", "on", "--upstream",
               "http://127.0.0.1:%d" % sim.port, "--cache-dir", os.path.join(WORK, "bool-cache2")])
    try:
        h.json_error(h.contacts(g.port, "days=30&limit=1"), 504, "offline")
    finally:
        h.stop_gateway(g)


@run.test
def durations_take_units():
    cache = os.path.join(WORK, "units-cache")
    for args in (["--upstream-timeout", "30s"], ["--upstream-timeout", "500ms"],
                 ["--client-timeout", "5m"], ["--breaker-cooldown", "1h"],
                 ["--ttl", "1d"], ["--stale-if-error", "7d"], ["--ttl-wide", "2000ms"],
                 ["--queue-timeout", "0"], ["--ttl", "90"]):
        r = check("--cache-dir", cache, *args)
        assert r.returncode == 0, (args, r)
    # a TTL given in minutes is what the answers carry
    g = start(["--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:%d" % sim.port,
               "--cache-dir", cache, "--ttl", "2m"])
    try:
        assert h.contacts(g.port, "days=30&limit=1").status == 200
        r = h.contacts(g.port, "days=30&limit=1")
        m = re.search(r"; hit; ttl=(\d+)", r.header("cache-status") or "")
        assert m and 60 < int(m.group(1)) <= 120, r.header("cache-status")
    finally:
        h.stop_gateway(g)


@run.test
def a_key_repeated_in_the_file_names_both_lines():
    path = conf("repeat.conf", "listen = 127.0.0.1:0\n# c\nttl = 30\n\nupstream-rate = 2\nttl = 60\n")
    err = one_line_exit_2(["--config", path])
    assert err == "contacts-gateway: %s:6: 'ttl' already set on line 3\n" % path, err


@run.test
def help_shows_bounds():
    text = gw("--help").stdout.decode()
    assert re.search(r"^\s*--upstream-timeout MS\s.*\[1\.\.3600000 ms\] \[default: 30000\]",
                     text, re.M), text
    for line in text.splitlines():
        m = re.match(r"\s*--(\S+) (MS|SECONDS|N|BYTES|RPS|DAYS)\s", line)
        if m:
            assert re.search(r"\[[0-9.]+[KMG]?\.\.[0-9]+[KMG]?( ms| s| bytes| per s)?"
                             r"(, or inherit|, or off)?\]", line), ("no bounds", line)
    for flag in ("-t, --check-config", "-v, -V, --version", "--upstream-ca-file FILE"):
        assert flag in text, flag


@run.test
def listen_unresolvable_or_busy_is_one_line():
    one_line_exit_2(["--listen", "nohost.invalid:8080", "--cache-dir", os.path.join(WORK, "c1")],
                    must_name=("listen", "nohost.invalid"))
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        port = blocker.getsockname()[1]
        one_line_exit_2(["--listen", "127.0.0.1:%d" % port, "--cache-dir",
                         os.path.join(WORK, "c2")], must_name=(str(port), "in use"))
        # the admin endpoint's address too (its token from a private file: no warning)
        token = conf("token.conf", "admin-token = 0123456789abcdef0123\n")
        os.chmod(token, 0o600)
        one_line_exit_2(["--listen", "127.0.0.1:0", "--cache-dir", os.path.join(WORK, "c3"),
                         "--config", token, "--admin-listen", "127.0.0.1:%d" % port],
                        must_name=(str(port),))
    finally:
        blocker.close()


@run.test
def cache_dir_that_is_a_file_is_one_line():
    f = conf("not-a-dir", "x")
    one_line_exit_2(["--listen", "127.0.0.1:0", "--cache-dir", f],
                    must_name=(f, "not a directory"))
    one_line_exit_2(["--listen", "127.0.0.1:0", "--cache-dir", os.path.join(f, "sub")],
                    must_name=("not a directory",))
    assert open(f).read() == "x"


@run.test
def upstream_credentials_are_never_printed():
    secret = "s3cret-Pw"
    url = "http://gwuser:%s@127.0.0.1:%d" % (secret, sim.port)
    g = start(["--listen", "127.0.0.1:0", "--upstream", url,
               "--cache-dir", os.path.join(WORK, "cred-cache")] + NO_CACHE)
    try:
        assert h.contacts(g.port, "days=30&limit=1").status == 200
    finally:
        h.stop_gateway(g)
    log = g.read_log()
    assert "upstream http://***@127.0.0.1:%d" % sim.port in log, log
    assert secret not in log, log
    err = one_line_exit_2(["--upstream", "ftp://gwuser:%s@example.invalid" % secret])
    assert secret not in err and "gwuser" not in err, err
    r = check("--upstream", url, "--cache-dir", os.path.join(WORK, "cred-cache"))
    assert r.returncode == 0 and secret.encode() not in r.stdout + r.stderr, r


@run.test
def an_exposed_admin_token_is_warned_about():
    cache = os.path.join(WORK, "token-cache")
    tok = "0123456789abcdef0123"
    r = check("--admin-token", tok, "--cache-dir", cache)
    assert r.returncode == 0 and r.stdout == b"configuration ok\n", r
    lines = stderr_lines(r)
    assert len(lines) == 1 and " warn " in lines[0] and "command line" in lines[0], lines
    assert tok not in lines[0]
    path = conf("token-file.conf", "admin-token = %s\n" % tok)
    os.chmod(path, 0o644)
    r = check("--config", path, "--cache-dir", cache)
    lines = stderr_lines(r)
    assert r.returncode == 0 and len(lines) == 1, r
    assert path in lines[0] and "other users" in lines[0] and tok not in lines[0], lines
    os.chmod(path, 0o600)
    r = check("--config", path, "--cache-dir", cache)
    assert r.returncode == 0 and r.stderr == b"", r
    # a start that fails is still one line (the warning comes once serving)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    try:
        one_line_exit_2(["--listen", "127.0.0.1:%d" % blocker.getsockname()[1],
                         "--cache-dir", cache, "--admin-token", tok], must_name=("in use",))
    finally:
        blocker.close()
    # a real start logs the warning too, and goes on
    g = start(["--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:%d" % sim.port,
               "--cache-dir", cache, "--admin-token", tok])
    try:
        assert "admin-token given on the command line" in g.read_log(), g.tail()
    finally:
        h.stop_gateway(g)


@run.test
def upstream_ca_file_must_be_a_readable_file():
    one_line_exit_2(["--upstream-ca-file", os.path.join(WORK, "none.pem")],
                    must_name=("upstream-ca-file", "none.pem"))
    one_line_exit_2(["--upstream-ca-file", WORK], must_name=("not a regular file",))
    pem = conf("ca.pem", "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    r = check("--upstream-ca-file", pem, "--cache-dir", os.path.join(WORK, "ca-cache"))
    assert r.returncode == 0, r
    text = conf("ca-key.conf", "upstream-ca-file = %s\n" % pem)
    r = check("--config", text, "--cache-dir", os.path.join(WORK, "ca-cache"))
    assert r.returncode == 0, r


@run.test
def readme_options_table_matches_help():
    """README's table is kept in step with the option table by hand: every
    option --help lists is a row, with the same default, and no row more."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "README.md")) as f:
        rows = re.findall(r"^\| `--([a-z][a-z0-9-]*)[^`]*` \| ([^|]+) \|", f.read(), re.M)
    readme = {n: d.strip() for n, d in rows}
    text = gw("--help").stdout.decode()
    listed = re.findall(r"^  --([a-z][a-z0-9-]*)(?: \S+)?\s.*?(?:\[default: ([^\]]+)\])?$",
                        text, re.M)
    helped = {n: d for n, d in listed if n not in ("help", "version", "check-config")}
    assert set(readme) == set(helped), ("README only", sorted(set(readme) - set(helped)),
                                        "--help only", sorted(set(helped) - set(readme)))
    wrong = []
    for n, d in helped.items():
        want = "off" if d == "false" else ("`%s`" % d if d else None)
        if want is not None and readme[n] != want:
            wrong.append((n, readme[n], want))
        if want is None and readme[n] not in ("none", "off"):
            wrong.append((n, readme[n], "none or off"))
    assert not wrong, wrong


@run.test
def clean_exit():
    assert sim.stop() == 0, sim.tail()


run.run()
