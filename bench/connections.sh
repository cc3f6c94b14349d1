#!/usr/bin/env bash
# Idle connection cost (not a test): server RSS per idle websocket client, and server CPU to
# accept them, with N stock socket.io-client connections authenticated by JWT.
#   bench/connections.sh [N]      (needs a release build and `npm ci --prefix tests/js`)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-2000}
cargo build --release --locked -q
data=$(mktemp -d); trap 'kill $pid 2>/dev/null; rm -rf "$data"' EXIT
port=18181
TALLY_PORT=$port TALLY_BIND=127.0.0.1 TALLY_DATA_DIR=$data RUST_LOG=warn target/release/tally serve & pid=$!
sleep 1
token=$(TALLY_DATA_DIR=$data target/release/tally token --user bench --org bench --role viewer)
rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
cpu() { awk '{print $14 + $15}' /proc/$pid/stat; }
before=$(rss); ticks=$(cpu); log="$data/clients.log"
node bench/connections.mjs "http://127.0.0.1:$port" "$token" "$count" > "$log" 2>&1 &
for _ in $(seq 1 240); do grep -q READY "$log" && break; sleep 0.5; done
sleep 1
after=$(rss); used=$(( ($(cpu) - ticks) * 1000 / $(getconf CLK_TCK) ))
head -1 "$log"
echo "clients=$count rss_before=${before}kB rss_after=${after}kB per_connection=$(( (after - before) * 1024 / count ))B accept_cpu=${used}ms"
sleep 5
