"""Packaging: `cmake --install` lays out the binary, the simulator as
contacts-gateway-sim, the man page, the systemd units, the example config and
the docs; the man page is generated from the option table (every --help
option is in it) and renders without warnings; the units carry what issue 10
asks and `systemd-analyze verify` accepts them (systemd's tools are installed
from Debian if missing; the check is skipped, with a printed reason, only if
they cannot be); the Debian package built by scripts/package.sh has Depends
from the shared libraries, the files in the usual places, maintainer scripts
that create nothing, and a binary that runs; the container files are coherent.
No container runtime is needed."""
import os
import re
import shutil
import subprocess

os.environ.setdefault("CG_IT_WATCHDOG", "170")  # apt-get and a package build
import harness as h  # noqa: E402

a = h.args()
run = h.Runner()
SRC = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BUILD = os.path.dirname(a.gateway)
PREFIX = h.tmpdir("prefix")
SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "CACHE TOOLS", "FILES",
            "EXIT STATUS", "SEE ALSO"]


def sh(cmd, timeout=120, **kw):
    """Runs cmd (a list); returns the CompletedProcess (text)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def skip(what, why):
    print("SKIP %s: %s" % (what, why), flush=True)


def have(tool):
    return shutil.which(tool) is not None


def ensure_packages(*names):
    """Installs Debian packages through scripts/setup.sh (its CG_SETUP_EXTRA),
    the one place that runs apt. Returns None, or why it could not."""
    r = sh(["bash", os.path.join(SRC, "scripts", "setup.sh")], timeout=150,
           env=dict(os.environ, CG_SETUP_EXTRA=" ".join(names)))
    if r.returncode != 0:
        return (r.stderr or r.stdout).strip().splitlines()[-1:] or ["exit %d" % r.returncode]
    return None


def help_options():
    text = sh([a.gateway, "--help"]).stdout
    return sorted(set(re.findall(r"^\s+--([a-z][a-z0-9-]*)", text, re.M)))


def unit_text(name):
    with open(os.path.join(SRC, "deploy", name)) as f:
        return f.read()


def unit_keys(text):
    """{key: [values]} of a unit file (comments and sections ignored)."""
    keys = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, v = line.split("=", 1)
            keys.setdefault(k.strip(), []).append(v.strip())
    return keys


@run.test
def cmake_install_lays_out_every_file():
    r = sh(["cmake", "--install", BUILD, "--prefix", PREFIX])
    assert r.returncode == 0, r.stderr[-2000:]
    want = ["bin/contacts-gateway", "bin/contacts-gateway-sim",
            "share/man/man8/contacts-gateway.8.gz",
            "lib/systemd/system/contacts-gateway.service",
            "lib/systemd/system/contacts-gateway.socket",
            "etc/contacts-gateway/contacts-gateway.conf",
            "share/doc/contacts-gateway/README.md",
            "share/doc/contacts-gateway/operations.md",
            "share/doc/contacts-gateway/configuration.md",
            "share/doc/contacts-gateway/scale-out.md",
            "share/doc/contacts-gateway/examples/haproxy.cfg"]
    missing = [p for p in want if not os.path.isfile(os.path.join(PREFIX, p))]
    assert not missing, ("not installed", missing)
    for p in ("bin/contacts-gateway", "bin/contacts-gateway-sim"):
        assert os.access(os.path.join(PREFIX, p), os.X_OK), p
    r = sh([os.path.join(PREFIX, "bin/contacts-gateway"), "--version"])
    assert r.returncode == 0 and r.stdout.startswith("contacts-gateway "), r
    # the installed config is good, and the installed unit names the installed paths
    conf = os.path.join(PREFIX, "etc/contacts-gateway/contacts-gateway.conf")
    r = sh([os.path.join(PREFIX, "bin/contacts-gateway"), "-t", "--config", conf,
            "--cache-dir", h.tmpdir("installed-cache")])
    assert r.returncode == 0 and r.stdout == "configuration ok\n", r
    with open(os.path.join(PREFIX, "lib/systemd/system/contacts-gateway.service")) as f:
        exec_start = unit_keys(f.read())["ExecStart"][0].split()
    assert exec_start[0].endswith("/bin/contacts-gateway"), exec_start
    assert exec_start[exec_start.index("--config") + 1].endswith(
        "/etc/contacts-gateway/contacts-gateway.conf"), exec_start


@run.test
def the_man_page_has_every_option_and_renders_cleanly():
    page = os.path.join(BUILD, "contacts-gateway.8")
    with open(page) as f:
        src = f.read()
    missing = [o for o in help_options() if "\\-\\-" + o.replace("-", "\\-") not in src]
    assert not missing, ("in --help, not in the man page", missing)
    for flag in ("\\-t", "\\-\\-check\\-config", "\\-V", "\\-\\-version"):
        assert flag in src, flag
    if not have("groff"):
        why = ensure_packages("groff-base")
        if why:
            skip("groff", "groff-base cannot be installed: %s" % why)
            return
    r = sh(["groff", "-ww", "-z", "-man", page])
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = sh(["groff", "-man", "-Tutf8", page], env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    text = re.sub(r".\x08", "", r.stdout)  # overstrike bold/underline
    headings = re.findall(r"^([A-Z][A-Z ]+)$", text, re.M)
    assert [s for s in SECTIONS if s in headings] == SECTIONS, headings
    signals = text[text.index("SIGNALS"):text.index("CACHE TOOLS")]
    for sig in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"):
        assert sig in signals, sig
    if have("mandoc"):
        r = sh(["mandoc", "-T", "lint", "-W", "warning", page])
        assert r.returncode == 0, r.stdout + r.stderr


@run.test
def the_units_say_what_the_issue_asks():
    svc = unit_keys(unit_text("contacts-gateway.service"))
    for k, v in [("Type", "notify"), ("ExecReload", "/bin/kill -HUP $MAINPID"),
                 ("DynamicUser", "yes"), ("StateDirectory", "contacts-gateway"),
                 ("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"),
                 ("PrivateTmp", "yes"), ("LimitNOFILE", "65536"),
                 ("Restart", "on-failure"), ("Requires", "contacts-gateway.socket")]:
        assert v in svc.get(k, []), (k, svc.get(k))
    assert svc.get("WatchdogSec"), "no WatchdogSec"
    cmd = svc["ExecStart"][0]
    assert "--cache-dir /var/lib/contacts-gateway" in cmd, cmd
    assert "--config /etc/contacts-gateway/contacts-gateway.conf" in cmd, cmd
    sock = unit_keys(unit_text("contacts-gateway.socket"))
    assert sock.get("ListenStream") == ["127.0.0.1:8080"], sock
    # the shipped config listens where the socket does
    with open(os.path.join(SRC, "deploy", "contacts-gateway.conf")) as f:
        assert re.search(r"^listen = 127\.0\.0\.1:8080$", f.read(), re.M)


@run.test
def systemd_analyze_verifies_both_units():
    if not have("systemd-analyze"):
        why = ensure_packages("systemd")
        if why or not have("systemd-analyze"):
            skip("systemd-analyze verify", "systemd cannot be installed: %s" % why)
            return
    if not os.path.isfile(os.path.join(PREFIX, "bin/contacts-gateway")):
        sh(["cmake", "--install", BUILD, "--prefix", PREFIX])
    # the installed units, their ExecStart pointed at the installed binary
    # (verify wants it to exist); the man page from the installed tree
    units = h.tmpdir("units")
    installed = os.path.join(PREFIX, "lib/systemd/system")
    for name in ("contacts-gateway.service", "contacts-gateway.socket"):
        with open(os.path.join(installed, name)) as f:
            text = f.read()
        text = re.sub(r"^ExecStart=\S+", "ExecStart=" + os.path.join(PREFIX, "bin/contacts-gateway"),
                      text, flags=re.M)
        with open(os.path.join(units, name), "w") as f:
            f.write(text)
    # verify runs `man` on Documentation=man:...: the installed page, when
    # man-db is there (a bare root has none; the page is checked above)
    man = [] if have("man") else ["--man=no"]
    if man:
        print("    (no man-db: systemd-analyze verify --man=no)", flush=True)
    r = sh(["systemd-analyze", "verify"] + man + [os.path.join(units, "contacts-gateway.service"),
                                                 os.path.join(units, "contacts-gateway.socket")],
           env=dict(os.environ, MANPATH=os.path.join(PREFIX, "share/man"), SYSTEMD_LOG_COLOR="0"))
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and out == "", out
    # and it does complain about a broken unit (the check checks)
    with open(os.path.join(units, "contacts-gateway.service"), "a") as f:
        f.write("[Service]\nNoSuchSetting=1\n")
    r = sh(["systemd-analyze", "verify"] + man + [os.path.join(units, "contacts-gateway.service")],
           env=dict(os.environ, MANPATH=os.path.join(PREFIX, "share/man")))
    assert "NoSuchSetting" in r.stdout + r.stderr, r


@run.test
def the_debian_package():
    if not (have("dpkg-deb") and have("dpkg-shlibdeps") and have("cpack")):
        why = ensure_packages("dpkg-dev", "file")
        if why:
            skip("Debian package", "dpkg-dev cannot be installed: %s" % why)
            return
    out = h.tmpdir("deb")
    r = sh(["bash", os.path.join(SRC, "scripts", "package.sh"), out, h.tmpdir("build-pkg")],
           timeout=150)
    assert r.returncode == 0, r.stderr[-3000:]
    deb = r.stdout.strip().splitlines()[-1]
    assert deb.startswith(out) and deb.endswith(".deb") and os.path.isfile(deb), r.stdout
    fields = {k: sh(["dpkg-deb", "-f", deb, k]).stdout.strip()
              for k in ("Package", "Version", "Depends", "Architecture")}
    assert fields["Package"] == "contacts-gateway", fields
    assert fields["Version"] == sh([a.gateway, "--version"]).stdout.split()[1], fields
    depends = fields["Depends"]
    for lib in ("libc6", "libcurl4", "libevent-2.1-7", "liblmdb0", "libcjson1", "ca-certificates"):
        assert re.search(r"(^|, )%s\b" % re.escape(lib), depends), (lib, depends)
    files = sh(["dpkg-deb", "-c", deb]).stdout
    for p in ("./usr/bin/contacts-gateway", "./usr/bin/contacts-gateway-sim",
              "./usr/share/man/man8/contacts-gateway.8.gz",
              "./usr/lib/systemd/system/contacts-gateway.service",
              "./usr/lib/systemd/system/contacts-gateway.socket",
              "./etc/contacts-gateway/contacts-gateway.conf",
              "./usr/share/doc/contacts-gateway/operations.md"):
        assert re.search(r" %s$" % re.escape(p), files, re.M), ("not in the package", p)
    ctl = h.tmpdir("deb-control")
    assert sh(["dpkg-deb", "-e", deb, ctl]).returncode == 0
    with open(os.path.join(ctl, "conffiles")) as f:
        assert f.read().split() == ["/etc/contacts-gateway/contacts-gateway.conf"]
    for script in ("postinst", "prerm", "postrm"):
        path = os.path.join(ctl, script)
        assert os.access(path, os.X_OK), script
        assert sh(["sh", "-n", path]).returncode == 0, script
        with open(path) as f:
            body = "\n".join(l for l in f.read().splitlines() if not l.lstrip().startswith("#"))
        # a DynamicUser unit needs no user, group or directory made for it
        for verb in ("useradd", "adduser", "groupadd", "addgroup", "mkdir", "install -d",
                     "chown", "systemd-sysusers", "systemd-tmpfiles"):
            assert verb not in body, (script, verb)
    root = h.tmpdir("deb-root")
    assert sh(["dpkg-deb", "-x", deb, root]).returncode == 0
    with open(os.path.join(root, "usr/lib/systemd/system/contacts-gateway.service")) as f:
        assert "ExecStart=/usr/bin/contacts-gateway --config /etc/contacts-gateway/" in f.read()
    r = sh([os.path.join(root, "usr/bin/contacts-gateway"), "--version"])
    assert r.returncode == 0 and r.stdout == sh([a.gateway, "--version"]).stdout, r


@run.test
def the_container_files_agree():
    with open(os.path.join(SRC, "deploy", "Containerfile")) as f:
        cf = f.read()
    stages = re.findall(r"^FROM (\S+)", cf, re.M)
    assert stages == ["debian:12-slim", "debian:12-slim"], stages  # multi-stage
    assert re.search(r"^USER (?!0\b|root\b)\S+", cf, re.M), "runs as root"
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", cf, re.M), "no health check"
    assert re.search(r'^VOLUME \["/var/lib/contacts-gateway"\]', cf, re.M)
    assert re.search(r"^EXPOSE 8080$", cf, re.M)
    assert "scripts/setup.sh" in cf and "scripts/package.sh" in cf
    for src in re.findall(r"^COPY (?!--from)(\S+) ", cf, re.M):
        assert src == "." or os.path.exists(os.path.join(SRC, src)), src
    with open(os.path.join(SRC, ".dockerignore")) as f:
        assert "build*/" in f.read().split()
    # the container's config: 0.0.0.0:8080 and the volume, accepted by -t
    conf = os.path.join(SRC, "deploy", "container.conf")
    with open(conf) as f:
        text = f.read()
    assert re.search(r"^listen = 0\.0\.0\.0:8080$", text, re.M), text
    assert re.search(r"^cache-dir = /var/lib/contacts-gateway$", text, re.M), text
    r = sh([a.gateway, "-t", "--config", conf, "--cache-dir", h.tmpdir("container-cache")])
    assert r.returncode == 0 and r.stdout == "configuration ok\n", r


run.run()
