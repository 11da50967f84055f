#!/bin/sh
# Should CI build the bundle? It takes minutes, so only when what goes into it changed: packaging/
# or pyproject.toml (the dependencies) differ from the last build's, the bundle is missing, or it is
# the nightly run (NIGHTLY=1). The last build's inputs are a hash kept beside the bundle
# (dist/.bundle-inputs.sha256, written by packaging/build.sh through --record).
#   packaging/ci_should_build.sh           exit 0 and say why: build; exit 1: the bundle is current
#   packaging/ci_should_build.sh --record  store the current hash (after a build)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STAMP=dist/.bundle-inputs.sha256

inputs_hash() {
    # Contents of every file under packaging/ (tracked or new, not ignored) and pyproject.toml.
    { git ls-files --cached --others --exclude-standard -- packaging pyproject.toml 2>/dev/null \
        || find packaging pyproject.toml -type f; } | LC_ALL=C sort | while read -r f; do
        [ -f "$f" ] && printf '%s %s\n' "$f" "$(sha256sum < "$f" | cut -d' ' -f1)"
    done | sha256sum | cut -d' ' -f1
}

if [ "${1:-}" = "--record" ]; then
    mkdir -p dist
    inputs_hash > "$STAMP"
    exit 0
fi
if [ "${NIGHTLY:-0}" = 1 ]; then
    echo "build: nightly run"; exit 0
fi
if [ ! -x dist/aggregator/aggregator ]; then
    echo "build: no bundle at dist/aggregator"; exit 0
fi
if [ ! -f "$STAMP" ]; then
    echo "build: no record of the last build's inputs ($STAMP)"; exit 0
fi
if [ "$(cat "$STAMP")" != "$(inputs_hash)" ]; then
    echo "build: packaging/ or pyproject.toml changed since the last build"; exit 0
fi
echo "skip: the bundle is current (packaging/ and pyproject.toml unchanged)"
exit 1
