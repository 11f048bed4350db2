#!/usr/bin/env bash
# Side-by-side benchmark: kong-rust-pluginserver + rust-hello against Kong's Python
# (PyPI kong-pdk) and JavaScript (npm kong-pdk) pluginservers running the same hello plugin
# (bench/compare/), driven by the same Kong-side load generator (tests/loadgen). Prints a
# table with ratios ours/theirs and checks the targets of docs/performance.md.
#
#   scripts/bench-compare.sh            # full run (what docs/performance.md reports)
#   QUICK=1 scripts/bench-compare.sh    # a short run, for trying things out
#
# Knobs (environment): PEAK_SECONDS, HALF_SECONDS, REPEAT, INSTANCES, RSS_EVENTS_LO, RSS_EVENTS_HI,
# WORKERS, CONCURRENCY, SERVERS ("rust js python"), RUST_ARGS (extra flags for our daemon, e.g.
# "--event-loops 1"), BENCH_DIR (scratch, default
# target/bench-compare). Installs the reference servers on first use (bench/compare/setup.sh).
# Everything runs on unix sockets in BENCH_DIR; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

if [[ -n "${QUICK:-}" ]]; then
  : "${PEAK_SECONDS:=2}" "${HALF_SECONDS:=2}" "${INSTANCES:=2000}" "${REPEAT:=1}"
  : "${RSS_EVENTS_LO:=100000}" "${RSS_EVENTS_HI:=500000}"
fi
: "${PEAK_SECONDS:=5}" "${HALF_SECONDS:=5}" "${INSTANCES:=10000}" "${REPEAT:=3}"
: "${RSS_EVENTS_LO:=1000000}" "${RSS_EVENTS_HI:=5000000}"
: "${WORKERS:=2}" "${CONCURRENCY:=32}" "${SERVERS:=rust js python}"
bench="${BENCH_DIR:-$root/target/bench-compare}"

bench/compare/setup.sh "$bench" >/dev/null
echo "== building (release): daemon, rust-hello, loadgen" >&2
cargo build --release --quiet -p kong-rust-pluginserver -p rust-hello -p kong-rust-pluginserver-loadgen

prefix="$bench/prefix"
results="$bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$prefix" "$results" "$bench/plugins/rust" "$bench/plugins/python" "$bench/plugins/js"
cp target/release/librust_hello.so "$bench/plugins/rust/"
cp bench/compare/python/py_hello.py "$bench/plugins/python/"
cp bench/compare/js/js-hello.js "$bench/plugins/js/"
loadgen="$root/target/release/loadgen"

# name → plugin, socket, start command (stderr to a log: the reference servers log every
# StartInstance at their default level).
plugin_of() { case "$1" in rust) echo rust-hello ;; js) echo js-hello ;; python) echo py_hello ;; esac; }
socket_of() { case "$1" in rust) echo "$prefix/rust-hello.socket" ;; js) echo "$prefix/js-hello.sock" ;; python) echo "$prefix/py_hello.sock" ;; esac; }
cmd_of() {
  local log="$results/$1.server.log"
  case "$1" in
    rust) echo "env RUST_LOG=warn $root/target/release/kong-rust-pluginserver --plugins-directory $bench/plugins/rust --kong-prefix $prefix ${RUST_ARGS:-} 2>>$log" ;;
    js) echo "$bench/js/node_modules/.bin/kong-js-pluginserver -d $bench/plugins/js -p $prefix --sock-name js-hello.sock 2>>$log" ;;
    python) echo "$bench/venv/bin/kong-python-pluginserver -d $bench/plugins/python -p $prefix --socket-name py_hello.sock 2>>$log" ;;
  esac
}
run() { # server label loadgen-args...
  local server="$1" label="$2"; shift 2
  echo "== $server: $label ($*)" >&2
  "$loadgen" --socket "$(socket_of "$server")" --spawn "$(cmd_of "$server")" \
    --plugin "$(plugin_of "$server")" --label "$server/$label" --json "$@" \
    > "$results/$server.$label.json"
}

echo "== $(nproc) cores; $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg); results in $results" >&2
# Best of REPEAT runs, the servers interleaved so that a noisy neighbour hits them alike:
# peak = the run with the most events/s; half = the run with the lowest p99.
best() { # server label key(events_per_s|p99) → copies the best run to SERVER.LABEL.json
  python3 - "$results" "$1" "$2" "$3" "$REPEAT" <<'PY'
import json, shutil, sys
results, server, label, key, n = sys.argv[1:6]
runs = []
for i in range(1, int(n) + 1):
    path = "%s/%s.%s.%d.json" % (results, server, label, i)
    try:
        r = json.load(open(path))["events"]
    except (OSError, ValueError, KeyError):
        continue
    score = r["events_per_s"] if key == "events_per_s" else -r["latency_us"]["p99"]
    runs.append((score, path))
if runs:
    shutil.copy(max(runs)[1], "%s/%s.%s.json" % (results, server, label))
PY
}
for rep in $(seq "$REPEAT"); do
  for server in $SERVERS; do
    run "$server" peak."$rep" --workers "$WORKERS" --concurrency "$CONCURRENCY" --duration "$PEAK_SECONDS" || true
  done
done
for server in $SERVERS; do best "$server" peak events_per_s; done
for rep in $(seq "$REPEAT"); do
  for server in $SERVERS; do
    peak=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["events"]["events_per_s"])' "$results/$server.peak.json")
    half=$(python3 -c 'import sys; print(round(float(sys.argv[1]) / 2))' "$peak")
    run "$server" half."$rep" --workers "$WORKERS" --rate "$half" --duration "$HALF_SECONDS" || true
  done
done
for server in $SERVERS; do
  best "$server" half p99
  run "$server" instances --instances "$INSTANCES"
done
if [[ " $SERVERS " == *" rust "* ]]; then
  run rust rss --workers "$WORKERS" --concurrency "$CONCURRENCY" --warmup 2000 \
    --events "$RSS_EVENTS_HI" --rss-at "$RSS_EVENTS_LO,$RSS_EVENTS_HI"
fi
echo "== load $(cut -d' ' -f1-3 /proc/loadavg)" >&2

{
  echo "peak: best of $REPEAT x ${PEAK_SECONDS}s closed loop ($WORKERS workers, $CONCURRENCY concurrent events); half: best p99 of $REPEAT x ${HALF_SECONDS}s open loop at half of that peak"
  python3 bench/compare/table.py "$results"
} | tee "$results/table.txt"
