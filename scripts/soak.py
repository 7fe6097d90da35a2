#!/usr/bin/env python3
"""Soak: run `lastmile serve` for a long time under `lastmile sim` and sample the server.

    python3 scripts/soak.py --binary target/release/lastmile --minutes 60 --out soak.md

Starts the server on a fresh SQLite database in a temporary folder (or on
--database-url), creates a tenant, runs the simulated city at a busy rate against it for
--minutes, and every --every seconds records the server's resident memory and open files
(from /proc), the queues (sync-back and webhook backlogs, unfinished orders), and the p99
of the request durations in that window (from the /metrics histogram, per route group).
Writes a Markdown table (start, every sample, end) and the raw samples as JSON beside it.
Everything runs on loopback and stops by itself.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

BUCKET = re.compile(r'^lastmile_http_request_duration_seconds_bucket\{(.*)\} (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def http(url, key=None, method="GET", body=None):
    req = urllib.request.Request(url, method=method, data=body)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


def metrics(base):
    return http(f"{base}/metrics")


def gauge_sum(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def group_of(path):
    if path.startswith("/v1/webhooks/"):
        return "webhooks"
    if path.startswith("/v1/driver"):
        return "driver"
    if path.startswith("/v1/orders"):
        return "orders"
    return None


def buckets(text):
    """{group: {le: cumulative count}} summed over the routes of each group."""
    out = {}
    for line in text.splitlines():
        m = BUCKET.match(line)
        if not m:
            continue
        labels = dict(LABEL.findall(m.group(1)))
        group = group_of(labels.get("route", ""))
        if group is None:
            continue
        le = labels.get("le")
        out.setdefault(group, {})
        out[group][le] = out[group].get(le, 0.0) + float(m.group(2))
    return out


def window_p99(before, after):
    """The p99 of the requests between two bucket snapshots, as the bucket's upper bound."""
    res = {}
    for group, now in after.items():
        prev = before.get(group, {})
        items = sorted(((float("inf") if le == "+Inf" else float(le)), now[le] - prev.get(le, 0.0)) for le in now)
        total = items[-1][1] if items else 0
        if total <= 0:
            continue
        target = 0.99 * total
        for le, cum in items:
            if cum >= target:
                res[group] = (le * 1000.0, int(total))
                break
    return res


def proc_stats(pid):
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kb / 1024.0, fds


def orders_unfinished(base, key):
    total = 0
    for status in ("received", "needs_location", "dispatching", "assigned", "picked_up"):
        cursor = None
        while True:
            url = f"{base}/v1/orders?status={status}&limit=500" + (f"&cursor={cursor}" if cursor else "")
            body = json.loads(http(url, key))
            total += len(body["orders"])
            cursor = body.get("next_cursor")
            if not cursor:
                break
    return total


def upgrade_shopify_stores(base, key, count, tier):
    """Once the simulator has created its stores, set the Shopify ones' tier (their API budget)."""
    for _ in range(600):
        stores = json.loads(http(f"{base}/v1/stores?limit=100", key)).get("stores", [])
        if len(stores) >= count:
            break
        time.sleep(0.1)
    for s in stores:
        if s.get("platform") == "shopify":
            http(f"{base}/v1/stores/{s['id']}", key, method="PATCH", body=json.dumps({"tier": tier}).encode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/lastmile")
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--every", type=float, default=60)
    ap.add_argument("--orders-per-minute", type=float, default=240)
    ap.add_argument("--drivers", type=int, default=300)
    ap.add_argument("--stores", type=int, default=9)
    ap.add_argument("--database-url")
    # 240 orders a minute over 9 stores is ~27 a minute per Shopify store: two syncs of 2-3
    # API calls each per order, past a standard store's 2 requests/s, so the sync backlog
    # would grow by the platform's own limit. Stores that busy are Shopify Plus stores.
    ap.add_argument("--shopify-tier", default="enterprise", choices=["standard", "enterprise"])
    ap.add_argument("--out", default="soak.md")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="lastmile-soak-")
    port = 18000 + os.getpid() % 1000
    base = f"http://127.0.0.1:{port}"
    db = args.database_url or f"sqlite://{work}/soak.db"
    env = dict(os.environ)
    env.update({
        "LASTMILE_LISTEN": f"127.0.0.1:{port}",
        "LASTMILE_DATABASE_URL": db,
        "LASTMILE_SECRET_KEY_FILE": f"{work}/lastmile.key",
        "LASTMILE_ALLOW_PRIVATE_URLS": "true",
        "LASTMILE_GEOCODING__OSM_PBF": os.path.abspath("crates/sim/data/helsinki.osm.pbf"),
        "RUST_LOG": "warn",
    })
    created = subprocess.run([args.binary, "admin", "create-tenant", "Soak Couriers"], env=env,
                             capture_output=True, text=True, check=True).stdout
    key = json.loads(created)["admin_key"]
    server = subprocess.Popen([args.binary, "serve"], env=env, stdout=open(f"{work}/server.log", "w"),
                              stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            http(f"{base}/readyz")
            break
        except Exception:
            time.sleep(0.1)
    else:
        server.kill()
        sys.exit("the server did not become ready")

    sim = subprocess.Popen([
        args.binary, "sim", "--target", base, "--admin-key", key,
        "--drivers", str(args.drivers), "--stores", str(args.stores),
        "--orders-per-minute", str(args.orders_per_minute), "--speed-mps", "40", "--handover-s", "5",
        "--duration", str(int(args.minutes * 60)), "--drain", "30", "--progress-every", "60",
        "--json", f"{work}/sim.json",
    ], env=env, stdout=open(f"{work}/sim.log", "w"), stderr=subprocess.STDOUT)

    if args.shopify_tier != "standard":
        upgrade_shopify_stores(base, key, args.stores, args.shopify_tier)

    samples = []
    prev = buckets(metrics(base))
    start = time.time()
    end = start + args.minutes * 60
    try:
        while True:
            time.sleep(args.every)
            text = metrics(base)
            now_b = buckets(text)
            rss, fds = proc_stats(server.pid)
            s = {
                "minute": round((time.time() - start) / 60, 1),
                "rss_mib": round(rss, 1),
                "open_files": fds,
                "sync_backlog": gauge_sum(text, "lastmile_sync_backlog"),
                "webhook_backlog": gauge_sum(text, "lastmile_webhook_backlog"),
                "driver_sockets": gauge_sum(text, "lastmile_driver_sockets"),
                "unfinished_orders": orders_unfinished(base, key),
                "p99_ms": {g: v[0] for g, v in window_p99(prev, now_b).items()},
                "requests": {g: v[1] for g, v in window_p99(prev, now_b).items()},
            }
            prev = now_b
            samples.append(s)
            print(json.dumps(s), flush=True)
            if time.time() >= end or sim.poll() is not None:
                break
    finally:
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(timeout=120)
        except subprocess.TimeoutExpired:
            sim.kill()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()

    groups = sorted({g for s in samples for g in s["p99_ms"]})
    head = "| minute | RSS MiB | open files | sync backlog | webhook backlog | unfinished orders | driver sockets | " + \
        " | ".join(f"p99 {g} ms (n)" for g in groups) + " |"
    lines = [head, "|" + "---|" * (7 + len(groups))]
    for s in samples:
        cells = [str(s["minute"]), str(s["rss_mib"]), str(s["open_files"]), f'{s["sync_backlog"]:.0f}',
                 f'{s["webhook_backlog"]:.0f}', str(s["unfinished_orders"]), f'{s["driver_sockets"]:.0f}']
        cells += [f'{s["p99_ms"].get(g, float("nan")):g} ({s["requests"].get(g, 0)})' for g in groups]
        lines.append("| " + " | ".join(cells) + " |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(args.out + ".json", "w") as f:
        json.dump({"samples": samples, "work_dir": work}, f, indent=1)
    print(f"wrote {args.out}; server and sim logs in {work}")


if __name__ == "__main__":
    main()
