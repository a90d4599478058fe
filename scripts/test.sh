#!/usr/bin/env bash
# Every check the project has: formatting, lints, and all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
