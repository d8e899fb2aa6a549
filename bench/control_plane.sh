#!/usr/bin/env bash
# The control plane at scale (issue 24): a release paas-server (SQLite) with simulated nodes that
# speak the real agent protocol over HTTP, at 10 nodes / 100 apps / 1,000 instances and at
# 100 nodes / 1,000 apps / 10,000 instances. Prints, per size, the median and spread over ROUNDS
# rounds of one convergence pass at rest, placement of APPS new instances, GET /v1/apps p99, the
# dashboard list page p99, heartbeats handled per second and the controller's RSS; then each
# figure's growth ratio from the small size to the large one (near 10x = linear).
#   bench/control_plane.sh [ROUNDS] [NODES:APPS ...]     (default 5 rounds, 10:100 100:1000)
# How it works and what is simulated: server/examples/control_plane_bench.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p paas-server --bin paas-server --example control_plane_bench
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
exec target/release/examples/control_plane_bench "$@"
