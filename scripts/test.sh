#!/usr/bin/env bash
# Every check the project has: formatting, lints, the Dockerfile and the Helm chart, unit tests,
# local-runner tests, and the end-to-end tests against a real Kubernetes control plane (built
# once and cached by scripts/control-plane.sh install, started fresh here, stopped at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
scripts/lint-dockerfile.sh

scripts/control-plane.sh install
cluster=$(mktemp -d "${TMPDIR:-/tmp}/ork-test-cluster.XXXXXX")
trap 'scripts/control-plane.sh stop "$cluster" >/dev/null 2>&1 || true' EXIT
ORK_TEST_KUBECONFIG=$(scripts/control-plane.sh start "$cluster")
export ORK_TEST_KUBECONFIG

# The chart: lint, render every option, schema checks, server-side dry runs; the renders feed
# the RBAC end-to-end tests.
ORK_TEST_CHART_DIR="$cluster/chart-renders"
export ORK_TEST_CHART_DIR
KUBECONFIG="$ORK_TEST_KUBECONFIG" scripts/check-chart.sh "$ORK_TEST_CHART_DIR"

cargo test --locked
