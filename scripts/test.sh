#!/usr/bin/env bash
# Every check the project has: formatting, lints, unit tests, local-runner tests, and the
# end-to-end tests against a real Kubernetes control plane (built once and cached by
# scripts/control-plane.sh install, started fresh here and stopped at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

scripts/control-plane.sh install
cluster=$(mktemp -d "${TMPDIR:-/tmp}/ork-test-cluster.XXXXXX")
trap 'scripts/control-plane.sh stop "$cluster" >/dev/null 2>&1 || true' EXIT
ORK_TEST_KUBECONFIG=$(scripts/control-plane.sh start "$cluster")
export ORK_TEST_KUBECONFIG

cargo test --locked
