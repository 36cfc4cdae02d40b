"""Differential test of policy/derive (issue 13) against the simulator.

Thousands of random (S, Q) pairs, generated from a fixed seed: S and Q are
two questions of the same key asked of the same simulator process (its clock
fixed by --now, so both are answered at the same moment, which is S's fetch
time). derive_cli derives Q's answer from S's body; for every pair

  1. when derive says ok, its bytes must equal the simulator's answer to Q,
     byte for byte (the issue's pass condition: 0 differences);
  2. its decision (ok, or the reason it refused) must equal the decision of
     an independent model of the rules written here in Python over the
     parsed JSON (so a needless refusal fails too);
  3. when the model says derivable, the model's own answer (elements picked
     from S's parsed list) must equal the simulator's parsed answer: the
     rules themselves, not only the C code, are checked against the vendor.

Two simulators: the normal data set, and --data adversarial (timestamps on
day/hour/second grids, so equal timestamps at cursor and days cuts are
common; hostile names with quotes, backslashes, brackets, fake fields,
control bytes, 4-byte and invalid UTF-8). Windows are chosen near the
edges: exactly full last pages (|S| == L), one short, one over, offsets
before / at / after S's window, cursors on an element's exact timestamp.

    python3 tests/integration/test_derive_diff.py --sim build/contacts-sim \\
        --derive-cli build/tests/derive_cli [--pairs N] [--seed S]

Prints the pairs, the derivable count per rule and the refusals by reason,
then `N passed, M failed`. Standard library only.
"""
import argparse
import collections
import datetime
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

NOW = "2026-01-01T00:00:00Z"
NOW_MS = 1767225600000
DAY_MS = 86400000
KEYS = [h.KEY_A, h.KEY_B, h.KEY_C]
RULES = ("pages", "cursors", "days")


# ---- the simulator ----

class Sim:
    """One simulator process and a kept-alive connection to it; answers
    are cached by (key, query): the data set and the clock are fixed."""

    def __init__(self, path, name, *extra):
        self.proc = h.Proc([path, "--listen", "127.0.0.1:0", "--now", NOW,
                            "--contacts", "1200"] + list(extra), name)
        self.conn = None
        self.cache = {}
        self.requests = 0
        orgs = json.loads(self._get("/__sim/orgs", None))
        self.orgs = orgs

    def _get(self, path, key):
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.proc.port,
                                                           timeout=30)
                self.conn.request("GET", path, headers={"x-api-key": key} if key else {})
                r = self.conn.getresponse()
                body = r.read()
                if r.status != 200:
                    raise AssertionError("sim %s -> %d %r" % (path, r.status, body[:200]))
                return body
            except (http.client.HTTPException, OSError):
                self.conn = None
                if attempt:
                    raise

    def ask(self, key, query):
        """The simulator's body (bytes) for one query string."""
        k = (key, query)
        if k not in self.cache:
            self.requests += 1
            self.cache[k] = self._get(h.PATH + "?" + query, key)
        return self.cache[k]


# ---- questions: a dict of parameters <-> a query string ----

def fmt_ms(ms):
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


def parse_ts(s):
    """The simulator's timestamps, YYYY-MM-DDTHH:MM:SS.mmmZ, to epoch ms."""
    assert len(s) == 24 and s[-1] == "Z", s
    t = datetime.datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")
    return (t - datetime.datetime(1970, 1, 1)) // datetime.timedelta(milliseconds=1) + int(s[20:23])


def to_query(q):
    """A query string, parameters in a shuffled order and with some of the
    equivalent spellings the vendor accepts (the C side normalises them)."""
    parts = []
    for k, v in q.items():
        if k in ("updated_after", "created_after"):
            v = fmt_ms(v)
        elif k == "days":
            v = str(v)
        parts.append("%s=%s" % (k, urllib.parse.quote(str(v), safe="")))
    return "&".join(parts)


def days_cut_ms(days):
    return NOW_MS - int(Decimal(days) * DAY_MS)  # whole-ms cuts only (days_exact)


def days_exact(days):
    """Derivable days: at most 9 decimals and a cut on a whole millisecond."""
    d = Decimal(str(days))
    return -d.as_tuple().exponent <= 9 and (d * DAY_MS) % 1 == 0


# ---- the model of the rules (docs/derived.md), over parsed JSON ----

PAGING = {"limit", "offset"}


def same_except(a, b, vary):
    ka = {k: v for k, v in a.items() if k not in vary}
    kb = {k: v for k, v in b.items() if k not in vary}
    return ka == kb


def cursor_of(q):
    if "updated_after" in q:
        return "updated_after"
    if "created_after" in q:
        return "created_after"
    return None


def model(sq, qq, s_elems):
    """(decision, rule, elements) for deriving qq from S: decision is "ok"
    or a reason name as derive_status_name() spells it."""
    cs, cq = cursor_of(sq), cursor_of(qq)
    if same_except(sq, qq, PAGING):
        rule = "pages"
    elif cs and cs == cq and same_except(sq, qq, PAGING | {cs}):
        rule = "cursors"
    elif (cs is None and cq is None and "days" in sq and "days" in qq
          and same_except(sq, qq, PAGING | {"days"})):
        rule = "days"
    else:
        return "different_filters", None, None
    if "limit" not in sq or "limit" not in qq:
        return "no_limit", rule, None
    L, O = sq["limit"], sq.get("offset", 0)
    l, o = qq["limit"], qq.get("offset", 0)
    if rule == "pages":
        inq = [True] * len(s_elems)
    elif rule == "cursors":
        field = "updated_at" if cs == "updated_after" else "created_at"
        if qq[cs] < sq[cs]:
            return "not_inside", rule, None
        inq = [parse_ts(e[field]) > qq[cs] for e in s_elems]
    else:
        if not days_exact(sq["days"]) or not days_exact(qq["days"]):
            return "days_inexact", rule, None
        if Decimal(qq["days"]) > Decimal(sq["days"]):
            return "not_inside", rule, None
        cut = days_cut_ms(qq["days"])
        inq = [parse_ts(e["last_message_at"]) >= cut for e in s_elems]
    if rule == "cursors":
        if O > 0 and (not s_elems or inq[0]):
            return "not_inside", rule, None
        base = 0
    else:
        if o < O:
            return "not_inside", rule, None
        base = O
    q_elems = [e for e, i in zip(s_elems, inq) if i]
    want = o - base
    ends_inside = rule == "days" and not all(inq)
    if want + l <= len(q_elems) or len(s_elems) < L or ends_inside:
        return "ok", rule, q_elems[want:want + l]
    return "not_inside", rule, None


# ---- derive_cli ----

class Deriver:
    def __init__(self, path):
        self.p = subprocess.Popen([path, "--batch"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)

    def derive(self, s_query, body, q_query):
        rec = ("%s\t%d\t%s\t%d\n" % (s_query, NOW_MS, q_query, len(body))).encode()
        self.p.stdin.write(rec + body + b"\n")
        self.p.stdin.flush()
        head = self.p.stdout.readline().decode().split()
        if not head:
            raise AssertionError("derive_cli died: %s" % self.p.poll())
        if head[0] == "no":
            return head[1], None, None
        n = int(head[2])
        out = self.p.stdout.read(n + 1)
        assert out[-1:] == b"\n"
        return "ok", head[1], out[:-1]

    def close(self):
        self.p.stdin.close()
        rc = self.p.wait(10)
        assert rc == 0, "derive_cli exited %d" % rc


# ---- generation ----

class Gen:
    def __init__(self, rnd, sim):
        self.r = rnd
        self.sim = sim

    def filters(self, key):
        """Non-time filters: mostly none, else a pipeline, a stage, a custom
        field (maybe with entity_type), or a stage nobody is in."""
        r = self.r
        org = self.sim.orgs[key]
        x = r.random()
        f = {}
        if x < 0.45:
            return f
        if x < 0.6:
            f["pipeline_id"] = r.choice(org["pipelines"])["id"]
        elif x < 0.72:
            f["stage_id"] = r.choice(r.choice(org["pipelines"])["stages"])
        elif x < 0.9:
            k, vs = r.choice([("status", ["Active", "Churned", "Trial"]),
                              ("tier", ["gold", "silver", "bronze"]),
                              ("region", ["north", "south", "S\u00e3o Paulo", "New York"])])
            f["custom_field_key"] = k
            f["custom_field_value"] = r.choice(vs)
            if r.random() < 0.4:
                f["entity_type"] = r.choice(["ticket", "customer"])
        elif x < 0.95:
            f["pipeline_id"] = r.choice(org["pipelines"])["id"]
            f["custom_field_key"] = "tier"
            f["custom_field_value"] = "gold"
        else:
            f["stage_id"] = "00000000-0000-0000-0000-000000000000"
        return f

    def whole(self, key, q):
        """The whole list of q's filters (no limit), parsed."""
        return json.loads(self.sim.ask(key, to_query(q)))

    def limit_near(self, n):
        """A limit around n: exact, one short, one over, or anywhere."""
        r = self.r
        c = r.choice([n, n, n + 1, n - 1, r.randint(1, 1000), r.choice([1, 2, 10, 100, 1000])])
        return max(1, min(1000, c))

    def window(self, n):
        """S's (limit, offset) over a list of n: often exactly full."""
        r = self.r
        O = 0 if r.random() < 0.6 else r.choice([r.randint(0, max(0, n + 3)), 10, 100])
        L = self.limit_near(max(1, n - O))
        if r.random() < 0.4:
            L = r.choice([5, 10, 50, 100, 250, 1000, r.randint(1, 300)])
        return L, O

    def qwindow(self, L, O, span):
        """Q's (limit, offset) near S's window; span: how many of Q's list
        are known to be in S (the boundary worth hitting)."""
        r = self.r
        kind = r.random()
        if kind < 0.25:
            o = O + r.choice([0, 0, 1, 2])
        elif kind < 0.5:
            o = O + r.randint(0, max(0, L))
        elif kind < 0.6:
            o = max(0, O - r.randint(1, 3))
        elif kind < 0.75:
            o = r.choice([0, O + span, O + span - 1, O + L])
        else:
            o = O + r.randint(0, max(1, 2 * L))
        o = max(0, o)
        rest = max(1, O + span - o)
        l = max(1, min(1000, r.choice([rest, rest, rest + 1, rest - 1, 1, L,
                                       r.randint(1, 1000)])))
        return l, o

    def paging(self, q, L, O):
        q = dict(q)
        q["limit"] = L
        if O or self.r.random() < 0.2:
            q["offset"] = O
        return q

    # -- one base and several pairs per rule --

    def pages(self, key):
        r = self.r
        f = self.filters(key)
        x = r.random()
        if x < 0.45:
            f["days"] = r.choice([1, 7, 30, 90, 365, r.randint(1, 365), "7.5"])
        elif x < 0.7:
            f["updated_after"] = NOW_MS - r.randint(1, 400) * DAY_MS + r.randint(0, DAY_MS)
        elif x < 0.9:
            f["created_after"] = NOW_MS - r.randint(1, 400) * DAY_MS + r.randint(0, DAY_MS)
        else:
            f["days"] = r.choice([30, 365])
            f["updated_after"] = NOW_MS - r.randint(1, 400) * DAY_MS
        n = len(self.whole(key, f))
        pairs = []
        for _ in range(2):
            L, O = self.window(n)
            sq = self.paging(f, L, O)
            got = max(0, min(L, n - O))
            for _ in range(3):
                l, o = self.qwindow(L, O, got)
                pairs.append((key, sq, self.paging(f, l, o)))
        self.refusals(key, pairs)
        return pairs

    def cursors(self, key):
        r = self.r
        f = self.filters(key)
        cur = "updated_after" if r.random() < 0.7 else "created_after"
        field = "updated_at" if cur == "updated_after" else "created_at"
        if r.random() < 0.1:
            f["days"] = r.choice([90, 365])  # days with a cursor: the cursor orders
        t1 = NOW_MS - r.randint(1, 400) * DAY_MS + r.randint(0, DAY_MS)
        f[cur] = t1
        whole = self.whole(key, f)
        times = [parse_ts(e[field]) for e in whole]
        n = len(whole)
        pairs = []
        for _ in range(2):
            L, O = self.window(n)
            if r.random() < 0.7:
                O = 0
            sq = self.paging(f, L, O)
            in_s = times[O:O + L]
            for _ in range(3):
                c = r.random()
                if in_s and c < 0.45:
                    t2 = r.choice(in_s)                    # on an element: ties at the cut
                    t2 += r.choice([0, 0, 0, -1, 1])
                elif c < 0.55:
                    t2 = t1
                elif c < 0.62:
                    t2 = t1 - r.randint(1, DAY_MS)         # backwards
                elif in_s and c < 0.7:
                    t2 = in_s[-1] + r.choice([0, 1])       # at or past S's last
                else:
                    t2 = t1 + r.randint(0, 30 * DAY_MS)
                t2 = max(0, min(t2, NOW_MS))
                qf = dict(f)
                qf[cur] = t2
                past = sum(1 for t in in_s if t > t2)
                l, o = self.qwindow(L, 0, past)
                pairs.append((key, sq, self.paging(qf, l, o)))
        return pairs

    def days(self, key):
        r = self.r
        f = self.filters(key)
        d1 = r.choice([2, 7, 30, 90, 365, r.randint(2, 365), "30.5", "7.25"])
        f["days"] = d1
        whole = self.whole(key, f)
        lms = [parse_ts(e["last_message_at"]) for e in whole]
        n = len(whole)
        pairs = []
        for _ in range(2):
            L, O = self.window(n)
            sq = self.paging(f, L, O)
            for _ in range(3):
                c = r.random()
                top = int(Decimal(d1))
                if c < 0.6:
                    d2 = r.randint(1, max(1, top - 1))
                elif c < 0.75:
                    d2 = r.choice(["1.5", "6.75", "29.99", "1.00001",     # fractions
                                   "1.0000003125", "1.00000001"])      # inexact
                elif c < 0.85:
                    d2 = d1
                else:
                    d2 = min(365, top + r.randint(1, 30))                # more: refused
                qf = dict(f)
                qf["days"] = d2
                cut = days_cut_ms(d2)
                p = sum(1 for t in lms if t >= cut)   # Q's whole list
                span = max(0, min(p - O, L))
                l, o = self.qwindow(L, O, span)
                pairs.append((key, sq, self.paging(qf, l, o)))
        return pairs

    def refusals(self, key, pairs):
        """A few pairs that must be refused for their queries."""
        r = self.r
        if not pairs or r.random() > 0.3:
            return
        _, sq, qq = pairs[0]
        x = r.random()
        if x < 0.3:
            qq = dict(qq)
            qq.pop("limit")
        elif x < 0.5:
            sq = dict(sq)
            sq.pop("limit")
        else:
            qq = dict(qq)
            qq["stage_id"] = r.choice(r.choice(self.sim.orgs[key]["pipelines"])["stages"])
            if sq.get("stage_id") == qq["stage_id"]:
                qq["stage_id"] = "ffffffff-ffff-ffff-ffff-ffffffffffff"
        pairs.append((key, sq, qq))


# ---- the run ----

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sim", required=True)
    p.add_argument("--derive-cli", required=True)
    p.add_argument("--pairs", type=int, default=int(os.environ.get("CG_DERIVE_PAIRS", "4000")))
    p.add_argument("--seed", type=int, default=13)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, h._on_term)
    signal.signal(signal.SIGALRM, h._on_alarm)
    signal.alarm(int(os.environ.get("CG_IT_WATCHDOG", "170")))
    run = h.Runner()
    stats = {}

    @run.test
    def differential():
        t0 = time.time()
        rnd = random.Random(a.seed)
        sims = [Sim(a.sim, "sim-normal", "--seed", "42"),
                Sim(a.sim, "sim-adversarial", "--seed", "7", "--data", "adversarial")]
        run.watch(*(s.proc for s in sims))
        deriver = Deriver(a.derive_cli)
        per_rule = collections.Counter()      # derivable, by rule and data set
        decisions = collections.Counter()     # (model rule, decision)
        exact_full = collections.Counter()    # S exactly full (|S| == L), derived
        ties = collections.Counter()          # an element of S equal to the cut
        diffs, wrong = [], []
        pairs = 0
        per_sim = a.pairs // len(sims)
        for sim in sims:
            g = Gen(rnd, sim)
            done = 0
            while done < per_sim:
                key = rnd.choice(KEYS)
                rule = rnd.choice(RULES)
                for key, sq, qq in getattr(g, rule)(key):
                    s_query, q_query = to_query(sq), to_query(qq)
                    s_body = sim.ask(key, s_query)
                    q_body = sim.ask(key, q_query)
                    s_elems = json.loads(s_body)
                    want, mrule, melems = model(sq, qq, s_elems)
                    got, grule, gbody = deriver.derive(s_query, s_body, q_query)
                    pairs += 1
                    done += 1
                    decisions[(mrule, want)] += 1
                    tag = "%s S=%s Q=%s (%s)" % (key, s_query, q_query, sim.proc.name)
                    if got != want or (got == "ok" and grule != mrule):
                        wrong.append("%s: derive %s/%s, model %s/%s" % (tag, got, grule, want,
                                                                       mrule))
                    if want == "ok" and melems != json.loads(q_body):
                        wrong.append("%s: the model's answer is not the vendor's" % tag)
                    if got == "ok":
                        per_rule[(grule, sim.proc.name)] += 1
                        if gbody != q_body:
                            diffs.append("%s:\n  derived %r\n  vendor  %r" % (
                                tag, gbody[:300], q_body[:300]))
                        if "limit" in sq and len(s_elems) == sq["limit"]:
                            exact_full[grule] += 1
                        cut = None
                        if grule == "cursors":
                            c = cursor_of(qq)
                            f = "updated_at" if c == "updated_after" else "created_at"
                            cut = qq[c]
                        elif grule == "days":
                            f, cut = "last_message_at", days_cut_ms(qq["days"])
                        if cut is not None and any(parse_ts(e[f]) == cut for e in s_elems):
                            ties[grule] += 1
        deriver.close()
        elapsed = time.time() - t0
        print("pairs: %d in %.1f s (%d simulator requests)" % (
            pairs, elapsed, sum(s.requests for s in sims)))
        for name in [s.proc.name for s in sims]:
            print("  %-16s derived: %s" % (name, ", ".join(
                "%s %d" % (r, per_rule[(r, name)]) for r in RULES)))
        print("  derived total:   %s" % ", ".join(
            "%s %d" % (r, sum(v for (rr, _), v in per_rule.items() if rr == r)) for r in RULES))
        print("  derived from an exactly full S (|S| == L): %s" % ", ".join(
            "%s %d" % (r, exact_full[r]) for r in RULES))
        print("  derived with an element of S exactly at the cut: %s" % ", ".join(
            "%s %d" % (r, ties[r]) for r in ("cursors", "days")))
        print("  decisions (rule, outcome): %s" % ", ".join(
            "%s/%s %d" % (r or "-", d, n) for (r, d), n in sorted(
                decisions.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))))
        print("  byte differences: %d; decisions differing from the model: %d" % (
            len(diffs), len(wrong)))
        stats.update(pairs=pairs, diffs=len(diffs), wrong=len(wrong))
        for d in (diffs + wrong)[:10]:
            print("  " + d)
        assert not diffs, "%d derived answers differ from the vendor's" % len(diffs)
        assert not wrong, "%d decisions differ from the model" % len(wrong)
        assert pairs >= a.pairs
        for r in RULES:
            n = sum(v for (rr, _), v in per_rule.items() if rr == r)
            assert n >= pairs // 20, "too few %s pairs derived: %d" % (r, n)
        for r in RULES:
            assert exact_full[r] > 0, "no %s pair derived from an exactly full S" % r
        for r in ("cursors", "days"):
            assert ties[r] > 0, "no %s pair with an element exactly at the cut" % r

    run.run()


if __name__ == "__main__":
    main()
