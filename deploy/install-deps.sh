#!/usr/bin/env bash
# Installs the system packages tickflow builds against (Debian/Ubuntu):
#   librocksdb-dev  RocksDB 7.8.3, linked by the `rocksdb` crate (see .cargo/config.toml)
#   libclang-dev    for the RocksDB bindings' bindgen step
# (librdkafka is built from the source bundled with the `rdkafka` crate: only gcc and make.)
# With --kafka, also what the Kafka tests use: the tansu broker (built once into
# ~/.cache/tickflow-tools, 20-30 minutes) and a Python venv with confluent-kafka.
# Does nothing when they are already installed.
set -euo pipefail
missing=()
for pkg in librocksdb-dev libclang-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = "--kafka" ]; then
  here="$(dirname "$0")"
  bash "$here/kafka-broker.sh" install
  bash "$here/kafka-broker.sh" python >/dev/null
fi
