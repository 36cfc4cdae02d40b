"""The command line and the config file: --help, --version, one-line errors
with exit code 2, values from the file, flags over the file."""
import os
import subprocess

import harness as h

a = h.args()
run = h.Runner()

OPTIONS = ["--config", "--listen", "--upstream", "--upstream-timeout", "--connect-timeout",
           "--client-timeout", "--shutdown-timeout", "--max-connections",
           "--upstream-connections", "--max-body-bytes", "--max-header-bytes", "--log-level",
           "--cache-dir", "--cache-size", "--ttl", "--ttl-cursor", "--ttl-wide",
           "--max-waiters", "--help", "--version"]


def gw(*args):
    return subprocess.run([a.gateway] + list(args), capture_output=True, timeout=10,
                          stdin=subprocess.DEVNULL)


@run.test
def help_lists_every_option():
    r = gw("--help")
    assert r.returncode == 0
    text = r.stdout.decode()
    for o in OPTIONS:
        assert o in text, o


@run.test
def version():
    r = gw("--version")
    assert r.returncode == 0 and r.stdout.decode().startswith("contacts-gateway ")


@run.test
def bad_options_are_one_line_and_exit_2():
    bad = [["--nope"], ["--listen"], ["serve"], ["--max-connections", "0"],
           ["--max-connections", "abc"], ["--listen", "nohost"], ["--listen", "1.2.3.4:99999"],
           ["--upstream", "ftp://x"], ["--log-level", "loud"], ["--upstream-timeout", "-5"],
           ["--connect-timeout", "1.5"], ["--max-body-bytes", "12Q"], ["--ttl", "inherit"],
           ["--cache-size", "1"], ["--config", "/nonexistent/gw.conf"]]
    for args in bad:
        r = gw(*args)
        err = r.stderr.decode()
        assert r.returncode == 2, (args, r.returncode, err)
        assert err.startswith("contacts-gateway: ") and err.count("\n") == 1, (args, err)


@run.test
def config_file_and_precedence():
    d = h.tmpdir("cli")
    sim = h.start_sim(a)
    conf = os.path.join(d, "gw.conf")
    with open(conf, "w") as f:
        f.write("# test config\nupstream = http://127.0.0.1:%d\nttl = 0\n"
                "cache-dir = %s/cache\nlog-level = warn\n" % (sim.port, d))
    g = h.Proc([a.gateway, "--config", conf, "--listen", "127.0.0.1:0", "--log-level", "info"],
               "gateway")
    try:
        assert "listening on" in g.read_log()  # info (the flag) beat warn (the file)
        r = h.contacts(g.port, "days=30&limit=1")
        assert r.status == 200 and len(r.json()) == 1  # upstream came from the file
    finally:
        assert g.stop() == 0
        sim.stop()


@run.test
def config_errors_name_file_and_line():
    d = h.tmpdir("cli2")
    conf = os.path.join(d, "bad.conf")
    with open(conf, "w") as f:
        f.write("listen = 127.0.0.1:0\n\nbogus = 1\n")
    r = gw("--config", conf)
    err = r.stderr.decode()
    assert r.returncode == 2 and "%s:3:" % conf in err and "bogus" in err, err
    with open(conf, "w") as f:
        f.write("max-connections = lots\n")
    r = gw("--config", conf)
    assert r.returncode == 2 and ":1:" in r.stderr.decode()


run.run()
