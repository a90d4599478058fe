#!/usr/bin/env bash
# Checks the Helm chart charts/ork without a helm binary, through Helm 4's Go SDK (PyPI's
# helm-python-sdk): lint; render with default values and with every documented option; validate
# charts/ork/ci/*.yaml against values.schema.json and check that bad values are rejected; check
# that charts/ork/crds/ is byte-identical to crds/; check the README's values table. The checks
# themselves are in scripts/check_chart.py.
#
# Usage:
#   scripts/check-chart.sh [OUT_DIR]     OUT_DIR gets default.yaml and namespaced.yaml (release
#                                        "ork" in namespace "ork-system"; namespaced.yaml watches
#                                        ork-team-a and ork-team-b), for `kubectl apply`
#   scripts/check-chart.sh --write-readme   regenerate the values table in charts/ork/README.md
#
# With KUBECONFIG set it also applies the CRDs (kubectl apply --server-side -f charts/ork/crds/),
# creates the namespaces ork-system, ork-team-a and ork-team-b (for real), then runs
# `kubectl apply --dry-run=server` on every render and Helm's own `install --dry-run=server` (with
# the capabilities Helm discovers from the cluster). For a throwaway Kubernetes 1.20 cluster:
#   KUBECONFIG=$(scripts/control-plane.sh start /tmp/chart-cp) scripts/check-chart.sh /tmp/renders
#   scripts/control-plane.sh stop /tmp/chart-cp
#
# Environment:
#   ORK_CACHE_DIR   cache root (default $HOME/.cache/ork); the Python virtualenv is
#                   $ORK_CACHE_DIR/venv, created once and shared with other scripts (this one only
#                   adds the packages it needs)
#   KUBECONFIG      see above
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

# Pinned: scripts/check_chart.py passes the kube_version and api_versions render options to the
# native library directly (the Python wrapper does not expose them).
HELM_PYTHON_SDK=helm-python-sdk==0.2.2
OTHER_PACKAGES=("jsonschema>=4.18" "PyYAML>=6")

cache="${ORK_CACHE_DIR:-${HOME:-/root}/.cache/ork}"
venv="$cache/venv"
py="$venv/bin/python"

log() { printf '[check-chart] %s\n' "$*" >&2; }

packages_present() {
  HELM_PYTHON_SDK="$HELM_PYTHON_SDK" "$py" - <<'EOF' 2>/dev/null
import os, re, sys
from importlib.metadata import version, PackageNotFoundError

def ver(name):
    return tuple(int(x) for x in re.findall(r"\d+", version(name))[:2])

try:
    ok = version("helm-python-sdk") == os.environ["HELM_PYTHON_SDK"].split("==")[1]
    ok = ok and ver("jsonschema") >= (4, 18) and ver("PyYAML") >= (6, 0)
    import helm_python, jsonschema, yaml  # noqa: F401  (and the native library loads)
except (PackageNotFoundError, ImportError, ValueError, OSError):
    ok = False
sys.exit(0 if ok else 1)
EOF
}

ensure_venv() {
  mkdir -p "$cache"
  # Serialise with other users of the same cache (another script may share the venv).
  exec 9>"$cache/venv.lock"
  flock 9
  if [[ -x $py ]] && ! "$py" -c 'import sys' 2>/dev/null; then
    log "the virtualenv in $venv does not run (its Python is gone); recreating it"
    rm -rf "$venv"
  fi
  if [[ ! -x $py ]]; then
    command -v python3 >/dev/null || { log "error: python3 is needed"; exit 1; }
    log "creating the virtualenv $venv"
    python3 -m venv "$venv"
  fi
  if ! packages_present; then
    log "installing $HELM_PYTHON_SDK ${OTHER_PACKAGES[*]} into $venv"
    "$py" -m pip install --quiet --disable-pip-version-check "$HELM_PYTHON_SDK" "${OTHER_PACKAGES[@]}"
    packages_present || { log "error: the packages still do not import after pip install"; exit 1; }
  fi
  exec 9>&-
}

ensure_venv

if [[ ${1:-} == --write-readme ]]; then
  exec "$py" scripts/check_chart.py --write-readme
fi

args=()
if [[ $# -ge 1 ]]; then
  args+=(--out "$1")
fi
status=0
"$py" scripts/check_chart.py "${args[@]}" || status=$?
log "took $((SECONDS - started)) s"
exit "$status"
