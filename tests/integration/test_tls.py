"""A TLS upstream (issue 10): the gateway in front of a local TLS terminator
(Debian's nginx, HTTP/2 on) that proxies to the simulator, with a test CA
made here by openssl:

- with --upstream-ca-file the gateway trusts the private CA, answers 200 with
  the simulator's bytes, and the exchange is HTTP/2 (nginx's log says so);
- without it the certificate is refused: 502, cause "tls" in the metrics;
- https_proxy (libcurl honours the standard proxy variables): the gateway
  reaches the terminator through an HTTP CONNECT proxy run by this test, and
  no_proxy sends it direct again.
Skipped with a printed reason only where nginx or openssl cannot be had.
"""
import os
import shutil
import socket
import subprocess
import threading

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a)
WORK = h.tmpdir("tls")

NGINX_CONF = """
worker_processes 1;
daemon off;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
%(user)s
events { worker_connections 256; }
http {
    log_format proto '$server_protocol $status $request_uri';
    access_log %(d)s/access.log proto;
    server {
        listen 127.0.0.1:%(port)d ssl http2;
        ssl_certificate %(d)s/server.pem;
        ssl_certificate_key %(d)s/server.key;
        location / { proxy_pass http://127.0.0.1:%(sim)d; }
    }
}
"""


def ensure(tool, package):
    if shutil.which(tool) or os.path.exists("/usr/sbin/" + tool):
        return True
    if os.geteuid() != 0:
        return False
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                   capture_output=True, timeout=300,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return shutil.which(tool) is not None or os.path.exists("/usr/sbin/" + tool)


def make_ca(d):
    """A CA and a server certificate for localhost, signed by it."""
    def ossl(*args):
        r = subprocess.run(["openssl"] + list(args), capture_output=True, timeout=60, cwd=d)
        assert r.returncode == 0, r.stderr
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
         "ca.pem", "-days", "2", "-subj", "/CN=contacts-gateway test CA")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
         "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")


class ConnectProxy:
    """A tiny HTTP CONNECT proxy on loopback, counting the tunnels it made."""

    def __init__(self):
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        self.s.listen(16)
        self.port = self.s.getsockname()[1]
        self.tunnels = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.s.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = c.recv(4096)
            if not chunk:
                c.close()
                return
            head += chunk
        line = head.split(b"\r\n")[0].decode()
        method, target, _ = line.split(" ", 2)
        if method != "CONNECT":
            c.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            c.close()
            return
        host, port = target.rsplit(":", 1)
        self.tunnels.append(target)
        u = socket.create_connection((host, int(port)), timeout=10)
        c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pump(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for x in (src, dst):
                    try:
                        x.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(c, u), daemon=True).start()
        pump(u, c)

    def close(self):
        self.s.close()


@run.test
def tls_upstream_with_a_private_ca_over_http2_and_a_proxy():
    if not ensure("openssl", "openssl") or not ensure("nginx", "nginx-light"):
        print("    SKIP: nginx or openssl cannot be installed here")
        return
    d = h.tmpdir("tls-nginx")
    make_ca(d)
    port = h.free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF % {"d": d, "port": port, "sim": sim.port,
                              "user": "user root;" if os.geteuid() == 0 else ""})
    ngx = h.Proc(["/usr/sbin/nginx", "-p", d, "-c", conf], "nginx", wait_listen=False)
    try:
        h.eventually(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0,
                     what="nginx listening")
        ref = h.contacts(sim.port, "days=30&limit=3").body
        upstream = "https://localhost:%d" % port
        g = h.start_gateway(a, sim.port, "--ttl", "0", "--upstream-ca-file",
                            os.path.join(d, "ca.pem"), upstream=upstream)
        try:
            r = h.contacts(g.port, "days=30&limit=3")
            assert r.status == 200 and r.body == ref, r
        finally:
            h.stop_gateway(g)
        with open(os.path.join(d, "access.log")) as f:
            log = f.read()
        assert "HTTP/2.0 200" in log, ("HTTP/2 was not negotiated", log)
        # without the CA: refused, cause tls
        g = h.start_gateway(a, sim.port, "--ttl", "0", upstream=upstream)
        try:
            r = h.contacts(g.port, "days=30&limit=3")
            h.json_error(r, 502, "bad_gateway")
            m = h.request(g.port, "/metrics").body.decode()
            assert 'contacts_gateway_upstream_requests_total{code="tls"} 1' in m, m[:2000]
        finally:
            h.stop_gateway(g)
        # through an HTTP CONNECT proxy (https_proxy), then not (no_proxy)
        proxy = ConnectProxy()
        try:
            env = dict(os.environ, https_proxy="http://127.0.0.1:%d" % proxy.port,
                       no_proxy="")
            cmd = h.WRAP + [a.gateway, "--listen", "127.0.0.1:0", "--upstream", upstream,
                            "--upstream-ca-file", os.path.join(d, "ca.pem"), "--ttl", "0",
                            "--cache-dir", h.tmpdir("tls-proxy")] + h.UNPROTECTED
            g = h.Proc(cmd, "gateway", env=env)
            try:
                r = h.contacts(g.port, "days=31&limit=2")
                assert r.status == 200, r
                assert proxy.tunnels == ["localhost:%d" % port], proxy.tunnels
            finally:
                h.stop_gateway(g)
            env["no_proxy"] = "localhost"
            g = h.Proc(cmd[:-len(h.UNPROTECTED)] + ["--cache-dir", h.tmpdir("tls-np")]
                       + h.UNPROTECTED, "gateway", env=env)
            try:
                assert h.contacts(g.port, "days=32&limit=2").status == 200
                assert len(proxy.tunnels) == 1, ("no_proxy ignored", proxy.tunnels)
            finally:
                h.stop_gateway(g)
        finally:
            proxy.close()
    finally:
        ngx.stop()


@run.test
def clean_exit():
    assert sim.stop() == 0, sim.tail()


run.run()
