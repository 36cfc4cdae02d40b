"""The command line and the config file: --help lists every option, --version,
every bad option or value is one stderr line `contacts-gateway: ...` and exit
status 2 (never a crash, never a listening gateway), values from a config file
take effect, flags override the file whatever their order, and config errors
name the file (and the line) with exit status 2."""
import os
import re
import socket
import subprocess
import time

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
    BAD += [[opt, "-1"], [opt, "-5000"], [opt, "abc"], [opt, "1.5"], [opt, ""], [opt, "10s"]]


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
        h.sim_latency(sim, 2000)
        try:
            t0 = time.time()
            r = h.contacts(g.port, "days=31&limit=1")
            took = time.time() - t0
        finally:
            h.sim_latency(sim, 0)
        h.json_error(r, 504, "gateway_timeout")
        assert 0.7 <= took < 1.8, ("upstream-timeout from the file not used", took)
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


@run.test
def clean_exit():
    assert sim.stop() == 0, sim.tail()


run.run()
