#!/usr/bin/env bash
# tickflow against DuckDB on the same generated ticks (see benches/duckdb_compare.py).
# Builds tickflow (release), puts DuckDB (PyPI) into the tools venv, runs the comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tickflow-target}"
cargo build --release -j 2 --bin tickflow >&2
venv="$(bash deploy/kafka-broker.sh python)"
"$venv" -c "import duckdb" 2>/dev/null || "$(dirname "$venv")/pip" install -q "duckdb==2.0.1" >&2
exec "$venv" benches/duckdb_compare.py --tickflow "$CARGO_TARGET_DIR/release/tickflow" "$@"
