#!/usr/bin/env python3
"""tickflow against DuckDB on the same generated ticks: the same one-minute OHLCV/VWAP bars
with exact decimals (DECIMAL, half-even rounding), whole process each, median of several runs.

    benches/duckdb_compare.sh [--ticks 1000000] [--runs 5]

The data is `tickflow gen --shape realistic` without bad, duplicate or late ticks, so a batch
query and the streaming engine must give the same bars; the script checks that they do (every
bar, every field, compared as exact decimals) before it prints the timings and the ratio.
DuckDB runs as its own process with 2 threads; tickflow with 2 workers, checkpoints off.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal

FX = {"USD": "1", "EUR": "1.08", "GBP": "1.27", "JPY": "0.0067"}

# Ticks without `currency` are in the base currency (USD); other prices are converted with
# price x rate rounded half-even to 8 places, as `normalize` does. VWAP = sum(price x size) /
# sum(size) rounded half-even to 8 places, computed on integers (DuckDB divides decimals in
# floating point): N = notional in units of 1e-16, V = volume in units of 1e-8, q = N / V
# rounded half-even is the VWAP in units of 1e-8.
QUERY = r"""
SET threads = 2;
SET enable_progress_bar = false;
SET TimeZone = 'UTC';
CREATE TEMP TABLE fx AS SELECT * FROM (VALUES {fx}) t(cur, rate);
CREATE TEMP TABLE ref AS
  SELECT upper(trim(symbol, ' ' || chr(9))) AS sym, instrument_id
  FROM read_csv('{refs}', header = true, all_varchar = true);
COPY (
WITH raw AS (
  SELECT venue, upper(trim(symbol, ' ' || chr(9))) AS sym, ts, price, size, seq,
         upper(trim(coalesce(currency, 'USD'))) AS cur
  FROM read_json('{ticks}', format = 'newline_delimited',
       columns = {{venue: 'VARCHAR', symbol: 'VARCHAR', ts: 'JSON', price: 'JSON',
                   size: 'JSON', seq: 'BIGINT', currency: 'VARCHAR'}})
), t AS (
  SELECT r.venue, ref.instrument_id, r.seq, r.cur,
         CASE WHEN json_type(r.ts) IN ('BIGINT', 'UBIGINT')
              THEN epoch_ms(CAST(CAST(r.ts AS VARCHAR) AS BIGINT))
              ELSE CAST(json_extract_string(r.ts, '$') AS TIMESTAMPTZ) END AS tsx,
         CAST(json_extract_string(r.price, '$') AS DECIMAL(18, 8)) AS p0,
         CAST(json_extract_string(r.size, '$') AS DECIMAL(18, 8)) AS sz
  FROM raw r JOIN ref ON ref.sym = r.sym
), c AS (
  SELECT t.*, CASE WHEN t.cur = 'USD' THEN t.p0
                   ELSE CAST(round_even(CAST(t.p0 AS DECIMAL(38, 8)) * fx.rate, 8)
                             AS DECIMAL(18, 8)) END AS px
  FROM t JOIN fx ON fx.cur = t.cur
), u AS (
  SELECT c.*, CAST(CAST(px AS DECIMAL(38, 8)) * 100000000 AS HUGEINT) AS pu,
         CAST(CAST(sz AS DECIMAL(38, 8)) * 100000000 AS HUGEINT) AS su
  FROM c
), b AS (
  SELECT instrument_id, time_bucket(INTERVAL '1 minute', tsx) AS ws,
         arg_min(px, (tsx, venue, seq)) AS open, max(px) AS high, min(px) AS low,
         arg_max(px, (tsx, venue, seq)) AS close, sum(CAST(sz AS DECIMAL(38, 8))) AS volume,
         count(*) AS trades, sum(pu * su) AS n, sum(su) AS v
  FROM u GROUP BY ALL
)
SELECT instrument_id, epoch_ms(ws) AS ws, open, high, low, close, volume, trades,
       CASE WHEN v = 0 THEN NULL ELSE
         CAST(n // v + CASE WHEN 2 * (n % v) > v OR (2 * (n % v) = v AND (n // v) % 2 = 1)
                            THEN 1 ELSE 0 END AS DECIMAL(38, 0)) * 0.00000001 END AS vwap
FROM b
) TO '{out}' (FORMAT csv, HEADER true);
"""


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def timed(cmd, **kw):
    start = time.monotonic()
    sh(cmd, **kw)
    return time.monotonic() - start


def dec(text):
    return None if text in ("", None) else Decimal(text).normalize()


def tickflow_bars(path):
    bars = {}
    for line in open(path):
        b = json.loads(line)
        ws = b["window_start"]
        key = (b["instrument_id"], ws)
        bars[key] = tuple(dec(b[k]) for k in ("open", "high", "low", "close", "volume")) + (
            b["trades"],
            dec(b["vwap"]),
        )
    return bars


def duckdb_bars(path):
    import csv
    from datetime import datetime, timezone

    bars = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            ws = datetime.fromtimestamp(int(r["ws"]) / 1000, tz=timezone.utc)
            key = (r["instrument_id"], ws.strftime("%Y-%m-%dT%H:%M:%SZ"))
            bars[key] = tuple(dec(r[k]) for k in ("open", "high", "low", "close", "volume")) + (
                int(r["trades"]),
                dec(r["vwap"]),
            )
    return bars


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tickflow", required=True)
    ap.add_argument("--dir")
    a = ap.parse_args()
    d = a.dir or tempfile.mkdtemp(prefix="tickflow-duckdb-")
    os.makedirs(d, exist_ok=True)
    sh([a.tickflow, "gen", "--out", d, "--ticks", str(a.ticks), "--instruments", "2000",
        "--seed", "42", "--shape", "realistic", "--bad-ratio", "0", "--duplicate-ratio", "0",
        "--late-ratio", "0"], stdout=subprocess.DEVNULL)
    ticks, refs = os.path.join(d, "ticks.jsonl"), os.path.join(d, "instruments.csv")
    fx = ", ".join(f"('{c}', {r}::DECIMAL(18, 8))" for c, r in FX.items())
    graph = os.path.join(d, "bars.toml")
    with open(graph, "w") as g:
        g.write(f"""[graph]
name = "duckdb-compare"
version = 1

[sources.ticks]
type = "file"
path = "{ticks}"

[operators.normalize]
type = "normalize"
input = "ticks"
fx = {{ EUR = "1.08", GBP = "1.27", JPY = "0.0067" }}

[operators.enrich]
type = "enrich"
input = "normalize"
reference = "{refs}"

[operators.bars]
type = "window"
input = "enrich"
size = "1m"

[sinks.bars]
type = "file"
input = "bars"
path = "{d}/tickflow-bars.jsonl"
""")
    sql = os.path.join(d, "bars.sql")
    out = os.path.join(d, "duckdb-bars.csv")
    with open(sql, "w") as s:
        s.write(QUERY.format(fx=fx, refs=refs, ticks=ticks, out=out))
    duck = [sys.executable, "-c",
            "import duckdb, sys; duckdb.connect().execute(open(sys.argv[1]).read())", sql]
    tf = [a.tickflow, "run", graph, "--workers", "2"]
    t_tf, t_duck = [], []
    for _ in range(a.runs):
        t_tf.append(timed(tf, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        t_duck.append(timed(duck))
    mine, theirs = tickflow_bars(os.path.join(d, "tickflow-bars.jsonl")), duckdb_bars(out)
    if mine != theirs:
        missing = sorted(set(theirs) - set(mine))[:3]
        extra = sorted(set(mine) - set(theirs))[:3]
        differ = [k for k in mine if k in theirs and mine[k] != theirs[k]][:3]
        print(f"bars differ: {len(mine)} vs {len(theirs)}; only DuckDB {missing}; "
              f"only tickflow {extra}; different {[(k, mine[k], theirs[k]) for k in differ]}")
        sys.exit(1)
    m_tf, m_duck = statistics.median(t_tf), statistics.median(t_duck)
    print(f"{a.ticks} ticks, {len(mine)} identical bars (every field, exact decimals)\n")
    print("| engine | median s | ticks/s | runs (s) |")
    print("|---|---|---|---|")
    for name, m, ts in (("tickflow, 2 workers", m_tf, t_tf), ("DuckDB, 2 threads", m_duck, t_duck)):
        runs = ", ".join(f"{t:.2f}" for t in ts)
        print(f"| {name} | {m:.2f} | {a.ticks / m:,.0f} | {runs} |")
    print(f"\ntickflow / DuckDB speed: {m_duck / m_tf:.2f}x")


if __name__ == "__main__":
    main()
