#!/usr/bin/env python3
"""Writes the text seeds of the fuzz corpora (tests/fuzz/corpus/<target>/).

Run by make_corpus.sh, which also writes the binary seeds (cg-fuzz-seeds).
The seeds are small and hand-picked: the fuzzer finds the rest. Existing
files of the same name are overwritten; nothing else is touched.
Usage: make_corpus.py CORPUS_DIR
"""
import json
import os
import struct
import sys

out = sys.argv[1]


def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("latin-1")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


QUERIES = [
    "days=30", "days=007.50&limit=10", "limit=100&offset=0&days=1",
    "created_after=2026-01-01T00:00:00Z", "updated_after=2026-01-01T10:00:00.5%2B02:00",
    "created_after=2025-12-31T23:59:59.999-05:30&days=2",
    "stage_id=0F8FAD5B-D9CB-469F-A165-70867728950E",
    "pipeline_id=7c9e6679-7425-40de-944b-e07fc1f90ae7&limit=5",
    "custom_field_key=status&custom_field_value=Active",
    "custom_field_key=st%C3%A4tus&custom_field_value=a%20b&entity_type=person",
    "entity_type=company", "days=1&unknown=x&foo", "days=1&&&days=2", "=1&days=3",
    "days=1e3", "days=-1", "offset=2147483647", "limit=abc", "days=%ZZ", "%00=1",
    "days=1&custom_field_key=s&custom_field_value=%C0%AF", "",
]
for i, q in enumerate(QUERIES):
    put("query", "seed-%02d" % i, q)

JSONS = [
    "[]", " [ ] ", "[1, -2.5e10, 0, true, false, null]", '[{"a": [1, {"b": "c"}]}]',
    '["\\u00e9\\n\\t\\"\\\\\\/", "\\ud83d\\ude00"]', "[[[[[[[[]]]]]]]]", '[{"": ""}]',
    "[1,]", "[01]", "[1.]", '["\x01"]', "[] x", "{}", '"s"', "[", "[\"\\ud800\"]",
    "[1e+999]", "\n[\r\n1\t]\n", "[" * 513 + "]" * 513, "[" * 512 + "]" * 512,
]
for i, j in enumerate(JSONS):
    put("json", "seed-%02d" % i, j)

CONFIGS = [
    "ttl\n60", "cache-size\n1G", "listen\n127.0.0.1:8080", "upstream\nhttps://api.example.com",
    "log-level\ndebug", "offline\ntrue", "upstream-rate\n0.5", "ttl-cursor\ninherit",
    "max-body-bytes\n64M", "caller-header\nX-Caller", "admin-listen\n[::1]:9000",
    "ttl\n-1", "cache-size\n99999999999999999999G", "nope\n1",
    "listen = 127.0.0.1:0\nttl = 30\n# comment\n\ncache-dir = /tmp/x\n",
    "ttl-wide = 600\nttl-wide-days = 90\nstale-if-error = 86400\n", "= 1\n", "ttl 60\n",
]
for i, c in enumerate(CONFIGS):
    put("config", "seed-%02d" % i, c)

CLOCK = struct.pack("<Q", 1767225600000)  # 2026-01-01T00:00:00Z
RETRY = [
    "120", " 0 ", "\t3600\t", "99999999999999999999", "Thu, 01 Jan 2026 00:02:00 GMT",
    "Wed, 31 Dec 2025 23:00:00 GMT", "Thursday, 01-Jan-26 00:02:00 GMT",
    "Thu Jan  1 00:02:00 2026", "Thu, 01 Jan 2026 23:59:60 GMT", "Thu, 32 Jan 2026 00:00:00 GMT",
    "thu, 01 jan 2026 00:00:00 gmt", "-1", "1.5", "", "Sunday, 06-Nov-94 08:49:37 GMT",
]
for i, r in enumerate(RETRY):
    put("retry_after", "seed-%02d" % i, CLOCK + r.encode())

HASH = "ab" * 32
# the well-formed entry lines (their etags need XXH3) come from cg-fuzz-seeds
LINES = [
    {"end": True, "entries": 2}, {"end": True}, {"end": 1, "entries": 0},
    {"key_hash": "zz", "query": "x"}, [], {"key_hash": HASH, "query": "\u00ff\u0080"},
    {"key_hash": HASH, "query": "days=30", "stored_ms": 1, "expires_ms": 2,
     "content_type": "", "etag": "0123456789abcdef", "body_b64": "W10="},
]
for i, l in enumerate(LINES):
    put("import_line", "seed-%02d" % i, json.dumps(l, separators=(",", ":")))
put("import_line", "seed-90", '{"key_hash":"%s","query":"a\\u0000b"}' % HASH)
put("import_line", "seed-91", "not json at all")
