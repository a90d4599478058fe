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
# The cluster's files (etcd data, logs) are kept only when something failed, to be read.
finish() {
  local status=$?
  scripts/control-plane.sh stop "$cluster" >/dev/null 2>&1 || true
  if ((status == 0)); then
    rm -rf "$cluster"
  else
    echo "the test cluster's files are kept in $cluster" >&2
  fi
}
trap finish EXIT
ORK_TEST_KUBECONFIG=$(scripts/control-plane.sh start "$cluster")
export ORK_TEST_KUBECONFIG

# The chart: lint, render every option, schema checks, server-side dry runs; the renders feed
# the RBAC end-to-end tests.
ORK_TEST_CHART_DIR="$cluster/chart-renders"
export ORK_TEST_CHART_DIR
KUBECONFIG="$ORK_TEST_KUBECONFIG" scripts/check-chart.sh "$ORK_TEST_CHART_DIR"

cargo test --locked
