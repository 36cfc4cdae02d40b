"""Compressed answers (issue 15), on the real gateway:

- a stored answer carries gzip (br, zstd with --compress gzip,br,zstd)
  representations made once when stored; each decodes byte for byte to the
  identity body the vendor sent;
- Accept-Encoding negotiation (RFC 9110 12.5.3): none -> identity;
  "gzip, deflate" (Python requests) -> gzip; "gzip, deflate, br" (Node
  fetch) -> br when stored; q-values, q=0, identity;q=0, "*"; a client that
  accepts nothing stored gets identity; Vary: Accept-Encoding on every
  cacheable answer; one strong ETag per representation, If-None-Match per
  representation; HEAD with the chosen representation's length; the miss
  itself (the landing) negotiated the same way;
- answers under --compress-min-bytes stay identity;
- a damaged stored representation is never sent (the record fails its
  checksum: fetched again);
- export/import round trip (import makes the representations again);
- a real client (Python requests, from Debian's python3-requests) reads
  through the gateway and decodes gzip.
"""
import gzip
import os
import shutil
import subprocess

import harness as h

a = h.args()
run = h.Runner()
sim = h.start_sim(a, contacts=2000)
BIG = "days=365&limit=300"   # ~170 KB
SMALL = "days=365&limit=1"   # ~600 bytes: under --compress-min-bytes


def vendor(q):
    r = h.contacts(sim.port, q)
    assert r.status == 200
    return r.body


def get(port, q, ae=None, extra=None, method="GET"):
    headers = {} if ae is None else {"Accept-Encoding": ae}
    headers.update(extra or {})
    return h.contacts(port, q, headers=headers, method=method)


def tool_decode(cmd, data):
    """Decodes with a Debian CLI (brotli, zstd); None if it is missing."""
    if not shutil.which(cmd[0]):
        return None
    r = subprocess.run(cmd, input=data, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def ensure_tools():
    missing = [p for p in ("brotli", "zstd") if not shutil.which(p)]
    if missing and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
                       capture_output=True, timeout=300,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


@run.test
def negotiation_and_every_representation_decodes():
    ensure_tools()
    ref = vendor(BIG)
    g = h.start_gateway(a, sim.port, "--ttl", "600", "--compress", "gzip,br,zstd")
    try:
        miss = get(g.port, BIG, "gzip, deflate")
        assert miss.status == 200 and "fwd=miss" in miss.header("cache-status"), miss
        assert miss.header("content-encoding") == "gzip", miss.headers
        assert miss.header("vary") == "Accept-Encoding"
        assert gzip.decompress(miss.body) == ref
        etag = miss.header("etag")
        assert etag.endswith('-gzip"'), etag
        sizes = {}
        for ae, want in (("gzip, deflate", "gzip"), ("gzip, deflate, br", "br"),
                         ("zstd", "zstd"), (None, None), ("deflate", None),
                         ("br;q=0.5, gzip;q=0.8", "gzip"), ("gzip;q=0", None),
                         ("identity;q=0, gzip", "gzip"), ("*", "br"),
                         ("*;q=0", None), ("identity;q=0", None), ("GZIP", "gzip")):
            r = get(g.port, BIG, ae)
            assert r.status == 200 and "hit" in r.header("cache-status"), (ae, r)
            assert r.header("content-encoding") == want, (ae, r.headers)
            assert r.header("vary") == "Accept-Encoding", (ae, r.headers)
            tag = r.header("etag")
            if want is None:
                assert r.body == ref and '-' not in tag, (ae, tag)
            else:
                assert tag.endswith('-%s"' % want), (ae, tag)
                sizes[want] = len(r.body)
                if want == "gzip":
                    assert gzip.decompress(r.body) == ref
                else:
                    out = tool_decode([want, "-d", "-c"], r.body)
                    assert out is None or out == ref, (want, "does not decode to the body")
        print("    %d bytes identity; gzip %d, br %d, zstd %d" % (
            len(ref), sizes["gzip"], sizes["br"], sizes["zstd"]))
        assert sizes["gzip"] < len(ref) / 3
        # one ETag per representation: If-None-Match per representation
        gz_tag = get(g.port, BIG, "gzip").header("etag")
        id_tag = get(g.port, BIG).header("etag")
        assert gz_tag != id_tag and gz_tag.startswith(id_tag[:-1])
        r = get(g.port, BIG, "gzip", {"If-None-Match": gz_tag})
        assert r.status == 304 and r.header("etag") == gz_tag and r.body == b"", r
        r = get(g.port, BIG, "gzip", {"If-None-Match": id_tag})
        assert r.status == 200 and r.header("content-encoding") == "gzip", r
        r = get(g.port, BIG, None, {"If-None-Match": id_tag})
        assert r.status == 304, r
        # HEAD: the chosen representation's length
        r = get(g.port, BIG, "gzip", method="HEAD")
        assert r.status == 200 and r.body == b"" and \
            int(r.header("content-length")) == sizes["gzip"], r.headers
        r = get(g.port, BIG, None, method="HEAD")
        assert int(r.header("content-length")) == len(ref), r.headers
    finally:
        h.stop_gateway(g)


@run.test
def small_answers_stay_identity_and_off_means_off():
    g = h.start_gateway(a, sim.port, "--ttl", "600")
    try:
        assert get(g.port, SMALL, "gzip").status == 200
        r = get(g.port, SMALL, "gzip")
        assert "hit" in r.header("cache-status") and r.header("content-encoding") is None, r
        assert r.body == vendor(SMALL) and r.header("vary") == "Accept-Encoding"
    finally:
        h.stop_gateway(g)
    g = h.start_gateway(a, sim.port, "--ttl", "600", "--compress", "off")
    try:
        get(g.port, BIG, "gzip")
        r = get(g.port, BIG, "gzip")
        assert "hit" in r.header("cache-status") and r.header("content-encoding") is None
    finally:
        h.stop_gateway(g)


@run.test
def a_damaged_representation_is_never_sent():
    d = h.tmpdir("damaged")
    ref = vendor(BIG)
    g = h.start_gateway(a, sim.port, "--ttl", "600", cache_dir=d)
    gz = get(g.port, BIG, "gzip").body
    h.stop_gateway(g)
    path = os.path.join(d, "data.mdb")
    with open(path, "r+b") as f:
        data = f.read()
        at = data.find(gz[100:140])
        assert at >= 0, "the gzip representation is not in data.mdb"
        f.seek(at)
        f.write(bytes([data[at] ^ 0xFF]))
    g = h.start_gateway(a, sim.port, "--ttl", "600", cache_dir=d)
    try:
        r = get(g.port, BIG, "gzip")
        assert "fwd=miss" in r.header("cache-status"), r.headers
        assert gzip.decompress(r.body) == ref
        h.eventually(lambda: "failed its checksum" in g.read_log(), what="the checksum line")
    finally:
        h.stop_gateway(g)


@run.test
def export_import_round_trip_makes_the_representations_again():
    d1, d2 = h.tmpdir("exp1"), h.tmpdir("exp2")
    ref = vendor(BIG)
    g = h.start_gateway(a, sim.port, "--ttl", "600", cache_dir=d1)
    gz1 = get(g.port, BIG, "gzip").body
    h.stop_gateway(g)
    out = os.path.join(h.tmpdir("exp"), "cache.jsonl")
    r = subprocess.run([a.gateway, "cache", "export", out, "--cache-dir", d1],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([a.gateway, "cache", "import", out, "--cache-dir", d2,
                        "--compress", "gzip"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    g = h.start_gateway(a, sim.port, "--ttl", "600", cache_dir=d2)
    try:
        before = h.sim_total(sim)
        r = get(g.port, BIG, "gzip")
        assert "hit" in r.header("cache-status"), r.headers
        assert r.header("content-encoding") == "gzip" and gzip.decompress(r.body) == ref
        assert r.body == gz1, "the same level, the same bytes"
        assert h.sim_total(sim) == before
    finally:
        h.stop_gateway(g)


REQUESTS = """
import sys, requests
r = requests.get(sys.argv[1], headers={"x-api-key": sys.argv[2]}, timeout=20)
sys.stdout.buffer.write(("%s %s\\n" % (r.status_code, r.headers.get("content-encoding"))).encode())
sys.stdout.buffer.write(r.content)
"""


@run.test
def a_real_client_decodes_gzip():
    py = "/usr/bin/python3"
    ok = os.path.exists(py) and subprocess.run([py, "-c", "import requests"],
                                               capture_output=True).returncode == 0
    if not ok and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        "python3-requests"], capture_output=True, timeout=300,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        ok = os.path.exists(py) and subprocess.run([py, "-c", "import requests"],
                                                   capture_output=True).returncode == 0
    if not ok:
        print("    SKIP: Debian's python3-requests is not installed and cannot be")
        return
    ref = vendor(BIG)
    g = h.start_gateway(a, sim.port, "--ttl", "600")
    try:
        url = "http://127.0.0.1:%d%s?%s" % (g.port, h.PATH, BIG)
        for _ in range(2):  # the miss, then a hit
            r = subprocess.run([py, "-c", REQUESTS, url, h.KEY_A], capture_output=True,
                               timeout=60)
            assert r.returncode == 0, r.stderr[-500:]
            head, body = r.stdout.split(b"\n", 1)
            assert head == b"200 gzip", head
            assert body == ref, "requests did not get the vendor's bytes"
    finally:
        h.stop_gateway(g)


@run.test
def clean_exit():
    assert sim.stop() == 0, sim.tail()


run.run()
