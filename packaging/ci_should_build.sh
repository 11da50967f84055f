#!/bin/sh
# Should CI build the bundle? It takes minutes, so only when what goes into it changed (packaging/
# or pyproject.toml, the dependencies), or nightly. CI runs on a clean checkout (no dist/), so the
# commits under test decide; a dist/ kept by a CI cache decides by the hash of the inputs it was
# built from (dist/.bundle-inputs.sha256, written by packaging/build.sh through --record).
#   NIGHTLY=1                                -> build
#   dist/aggregator and its stamp are there  -> build when the stamp differs from the inputs' hash
#   otherwise (a clean checkout)             -> build when packaging/ or pyproject.toml differ
#                                               between ${CI_BASE:-HEAD~1} and the checkout
# CI_BASE: the previously tested commit, when the CI system gives it (several commits at once).
#   packaging/ci_should_build.sh           exit 0 and say why: build; exit 1 and say why: skip;
#                                          exit 2: cannot decide (not a git checkout)
#   packaging/ci_should_build.sh --record  store the current inputs' hash (after a build)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STAMP=dist/.bundle-inputs.sha256
INPUTS="packaging pyproject.toml"

inputs_hash() {
    # Contents of every file under packaging/ (tracked or new, not ignored) and pyproject.toml.
    # shellcheck disable=SC2086
    { git ls-files --cached --others --exclude-standard -- $INPUTS 2>/dev/null \
        || find $INPUTS -type f; } | LC_ALL=C sort | while read -r f; do
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
if [ -x dist/aggregator/aggregator ] && [ -f "$STAMP" ]; then
    if [ "$(cat "$STAMP")" != "$(inputs_hash)" ]; then
        echo "build: packaging/ or pyproject.toml changed since the cached bundle was built"; exit 0
    fi
    echo "skip: the cached bundle is current (packaging/ and pyproject.toml unchanged)"; exit 1
fi
if [ -d dist/aggregator ]; then
    echo "build: dist/aggregator has no record of its inputs ($STAMP)"; exit 0
fi

# A clean checkout: what the commits under test changed.
if ! git rev-parse --verify --quiet HEAD >/dev/null 2>&1; then
    echo "error: $ROOT is not a git checkout with a commit: cannot tell what changed" >&2; exit 2
fi
BASE=${CI_BASE:-HEAD~1}
if ! git rev-parse --verify --quiet "$BASE^{commit}" >/dev/null 2>&1; then
    echo "build: cannot compare with $BASE (not a commit here: a shallow or first checkout?)"; exit 0
fi
# shellcheck disable=SC2086
changed=$({ git diff --name-only "$BASE" -- $INPUTS; git ls-files --others --exclude-standard -- $INPUTS; } |
    LC_ALL=C sort -u)
if [ -n "$changed" ]; then
    count=$(printf '%s\n' "$changed" | wc -l | tr -d ' ')
    first=$(printf '%s\n' "$changed" | head -n 3 | tr '\n' ' ')
    [ "$count" -gt 3 ] && first="$first..."
    echo "build: $count file(s) of packaging/ or pyproject.toml changed since $(git rev-parse --short "$BASE"): ${first% }"
    exit 0
fi
echo "skip: packaging/ and pyproject.toml unchanged since $(git rev-parse --short "$BASE") (no cached bundle)"
exit 1
