#!/usr/bin/env bash
# Installs the system packages tickflow builds against (Debian/Ubuntu):
#   librocksdb-dev  RocksDB 7.8.3, linked by the `rocksdb` crate (see .cargo/config.toml)
#   libclang-dev    for the RocksDB bindings' bindgen step
# (librdkafka is built from the source bundled with the `rdkafka` crate: only gcc and make.)
# With --test (or its old name --kafka), also what the test suite uses: the tansu broker
# (built once into ~/.cache/tickflow-tools, 20-30 minutes), a Python venv with confluent-kafka
# and schemathesis (the API checked against its OpenAPI document), and promtool (Debian's
# `prometheus` package) to lint /metrics.
# Does nothing when they are already installed.
set -euo pipefail
testing=""
case "${1:-}" in --test|--kafka) testing=1 ;; esac
packages=(librocksdb-dev libclang-dev)
[ -n "$testing" ] && packages+=(prometheus)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
if [ -n "$testing" ]; then
  here="$(dirname "$0")"
  bash "$here/kafka-broker.sh" install
  bash "$here/kafka-broker.sh" python >/dev/null
fi
