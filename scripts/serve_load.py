#!/usr/bin/env python3
"""The issue's own scenario, from outside: `o2c serve` on a fresh database, C HTTP clients
posting PutEvents requests of 10 straight-through closed-won entries as fast as they are
answered (or paced to an offered rate), the database watched until every engagement is
active and every queue empty.

Prints one table row per run: wall time to all active and to drained, the most messages
queued at any sample and those left when the last engagement became active, the server's
CPU (user + system, from /proc) per engagement, the acknowledgements' latency as the
clients saw it, and the server's peak RSS. Exits 1 if a request is refused or fails, the server exits, or the run does not drain
within the time limit (--limit).

usage: scripts/serve_load.py O2C_BINARY N [N ...] [--clients C] [--rate PER_SECOND] [--header] [--limit SECONDS]
(stdlib only: http.client keep-alive connections, sqlite3 to watch the file read-only)
"""
import argparse
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ENTRIES_PER_REQUEST = 10  # PutEvents takes at most 10 entries per call


def straight_through(sample, n):
    """Closed-won entry number n: its own opportunity and key, one fixed-fee line (no CLM gate)."""
    d = json.loads(json.dumps(sample["detail"]))
    opp = f"0068dLOAD{n:07d}"
    d["event_id"] = f"load-{opp}"
    d["idempotency_key"] = f"crm:opportunity:{opp}:closed-won:r1"
    d["payload"]["opportunity_id"] = opp
    d["payload"]["lines"] = [{"line_id": "1", "service_offering_id": "SVC-STRAT", "billing_model": "fixed_fee",
                              "amount": "1250000.00", "installments": 4, "installment_frequency": "quarterly"}]
    return {"Source": sample["source"], "DetailType": sample["detail-type"], "Detail": json.dumps(d)}


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def peak_rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(sorted_ms, p):
    return sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * p))]


def server_address(server, within_s=30):
    """The `host, port` serve prints on its first line, or exit if it does not within `within_s`."""
    line = []
    reader = threading.Thread(target=lambda: line.append(server.stdout.readline()), daemon=True)
    reader.start()
    reader.join(within_s)
    if not line or "http://" not in line[0]:
        server.kill()
        sys.exit(f"o2c serve did not print its address within {within_s} s: {line[:1]}")
    host, port = line[0].split("http://", 1)[1].split()[0].rstrip("/").split(":")
    return host, int(port)


def one_run(binary, n, clients, limit, rate=None):
    sample = json.load(open(os.path.join(ROOT, "events/samples/OpportunityClosedWon.v1.json")))
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "load.db")
        env = dict(os.environ, RUST_LOG="error")
        key = subprocess.run([binary, "sources", "add", "load", "--db", db, "--source", "*", "--detail-type", "*",
                              "--rate", "1000000"], check=True, capture_output=True, text=True, env=env).stdout.strip()
        server = subprocess.Popen([binary, "--log", "error", "serve", "--db", db, "--addr", "127.0.0.1:0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            host, port = server_address(server)
            bodies = [json.dumps({"Entries": [straight_through(sample, i) for i in range(s, min(n, s + ENTRIES_PER_REQUEST))]})
                      for s in range(0, n, ENTRIES_PER_REQUEST)]
            cpu0, start = cpu_seconds(server.pid), time.monotonic()
            latencies, failed, lock, nxt = [], [], threading.Lock(), [0]

            def client():
                conn = http.client.HTTPConnection(host, port, timeout=60)
                headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
                while True:
                    with lock:
                        i = nxt[0]
                        nxt[0] += 1
                    if i >= len(bodies) or failed:
                        break
                    # Paced: request i is due at its share of the offered rate, and its latency
                    # counts from then (a late send is the server's delay too).
                    t = start + i * ENTRIES_PER_REQUEST / rate if rate else time.monotonic()
                    if t > time.monotonic():
                        time.sleep(t - time.monotonic())
                    try:
                        conn.request("POST", "/v1/events", body=bodies[i], headers=headers)
                        resp = conn.getresponse()
                        answer = resp.read()
                        ok = resp.status == 200 and json.loads(answer).get("FailedEntryCount") == 0
                        why = f"{resp.status} {answer[:200]!r}"
                    except (OSError, http.client.HTTPException, ValueError) as e:
                        ok, why = False, f"request {i}: {e!r}"
                    with lock:
                        latencies.append((time.monotonic() - t) * 1000)
                        if not ok:
                            failed.append(why)
                conn.close()

            threads = [threading.Thread(target=client) for _ in range(clients)]
            for t in threads:
                t.start()
            # Watched from the first request: the most messages queued at any sample, and the
            # moments every engagement was active and every queue empty.
            watch = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
            published = active_at = queued_then = None
            most_queued = 0
            while True:
                if server.poll() is not None:
                    sys.exit(f"N={n}: o2c serve exited with {server.returncode} during the run")
                if failed:
                    sys.exit(f"N={n}: {len(failed)} request(s) refused or failed, e.g. {failed[0]}")
                active = watch.execute("SELECT count(*) FROM engagements WHERE status = 'active'").fetchone()[0]
                queued = watch.execute("SELECT count(*) FROM messages").fetchone()[0]
                most_queued = max(most_queued, queued)
                now = time.monotonic() - start
                if published is None and not any(t.is_alive() for t in threads):
                    published = now
                if active_at is None and active >= n:
                    active_at, queued_then = now, queued
                if published is not None and active_at is not None and queued == 0:
                    drained_at = now
                    break
                if now > limit:
                    sys.exit(f"N={n}: not drained after {limit} s: {active} of {n} active, {queued} queued")
                time.sleep(0.02)
            cpu = cpu_seconds(server.pid) - cpu0
            rss = peak_rss_mb(server.pid)
            watch.close()
        finally:
            server.kill()
            server.wait()
    ms = sorted(latencies)
    offered = f"{rate:.0f}/s" if rate else "max"
    print(f"{n:>7} {clients:>7} {offered:>8} {published:>9.2f} {active_at:>9.2f} {n / active_at:>9.1f} {most_queued:>8} {queued_then:>8} {drained_at:>9.2f} "
          f"{cpu:>7.2f} {cpu * 1000 / n:>10.2f}   {pct(ms, 0.5):5.1f} {pct(ms, 0.95):6.1f} {pct(ms, 0.99):6.1f} {ms[-1]:6.1f} ms {rss:>7.0f}",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary")
    ap.add_argument("sizes", nargs="+", type=int)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--header", action="store_true")
    ap.add_argument("--limit", type=float, default=900, help="seconds a run may take to drain")
    ap.add_argument("--rate", type=float, help="offer this many closed-won a second (default: as fast as answered)")
    a = ap.parse_args()
    if a.header:
        print(f"o2c serve: {a.clients} HTTP clients post PutEvents of {ENTRIES_PER_REQUEST} closed-won; the file watched until all active, then drained")
        print("(most q: the most messages queued at any sample, one every ~20 ms; queued: those left when the last engagement became active;\n acks: from each request's send, or from when it was due when paced; p99 is the max below 100 requests)")
        print(f"{'N':>7} {'clients':>7} {'offered':>8} {'posted s':>9} {'active s':>9} {'eng/s':>9} {'most q':>8} {'queued':>8} {'drained s':>9} "
              f"{'CPU s':>7} {'CPU ms/eng':>10}   {'ack p50':>5} {'p95':>6} {'p99':>6} {'max':>6}    {'RSS MB':>7}")
    for n in a.sizes:
        one_run(a.binary, n, a.clients, a.limit, a.rate)


if __name__ == "__main__":
    main()
