#!/bin/sh
# Build the Debian package from a bundle with dpkg-deb only (no debhelper):
#   packaging/build_deb.sh [--bundle dist/aggregator] [--version V] [--out dist]
# The bundle goes to /opt/data-aggregator, /usr/bin/aggregator links to it; the systemd unit is
# rendered from the one template (resources/systemd/aggregator.service.in) by app/service_cmd.py.
# PYTHON (default: build/venv's, else python3) runs the small helpers; DEB_COMPRESS:
# gzip (default: xz of 700 MB takes many minutes on a busy 2-core machine), xz (smaller, for
# releases) or zstd (dpkg 1.21.18+ only).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=dist/aggregator
OUT=dist
VERSION=
while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) BUNDLE=$2; shift 2 ;;
        --version) VERSION=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        *) echo "error: unknown argument $1 (allowed: --bundle DIR, --version V, --out DIR)" >&2; exit 2 ;;
    esac
done
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/build/venv/bin/python" ]; then PYTHON="$ROOT/build/venv/bin/python"; else PYTHON=python3; fi
fi
[ -x "$BUNDLE/aggregator" ] || { echo "error: $BUNDLE/aggregator: no bundle there (run packaging/build.sh)" >&2; exit 1; }
BUNDLE=$(cd "$BUNDLE" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -z "$VERSION" ]; then
    VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)
fi
ARCH=$(dpkg --print-architecture)
DEB="$OUT/data-aggregator_${VERSION}_${ARCH}.deb"

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
PKG="$STAGE/data-aggregator"
SHARE="$PKG/usr/share"
install -d "$PKG/DEBIAN" "$PKG/opt" "$PKG/usr/bin" "$PKG/lib/systemd/system" "$SHARE/applications" \
    "$SHARE/icons/hicolor/scalable/apps" "$SHARE/icons/hicolor/256x256/apps" "$SHARE/icons/hicolor/48x48/apps" \
    "$SHARE/doc/data-aggregator" "$SHARE/lintian/overrides" "$SHARE/man/man1"

cp -R "$BUNDLE" "$PKG/opt/data-aggregator"
# Symbols out of the package's shared objects (lintian: unstripped-binary-or-object), except those
# auditwheel vendored into *.libs/ (patchelf-edited: strip breaks them) and the program itself (its
# archive is appended to the ELF file).
if command -v strip >/dev/null; then
    find "$PKG/opt/data-aggregator" -path '*.libs/*' -prune -o -type f -name '*.so*' -print |
        while read -r lib; do
            if readelf -S "$lib" 2>/dev/null | grep -q '\.symtab'; then strip --strip-unneeded "$lib"; fi
        done
fi
ln -s /opt/data-aggregator/aggregator "$PKG/usr/bin/aggregator"
(cd "$ROOT" && PYTHONPATH="$ROOT" "$PYTHON" -m app.service_cmd deb-unit) > "$PKG/lib/systemd/system/aggregator.service"
D="$ROOT/packaging/deb"
install -m 644 "$D/data-aggregator.desktop" "$SHARE/applications/data-aggregator.desktop"
install -m 644 "$ROOT/resources/icons/aggregator.svg" "$SHARE/icons/hicolor/scalable/apps/data-aggregator.svg"
install -m 644 "$ROOT/resources/icons/aggregator-256.png" "$SHARE/icons/hicolor/256x256/apps/data-aggregator.png"
install -m 644 "$ROOT/resources/icons/aggregator-48.png" "$SHARE/icons/hicolor/48x48/apps/data-aggregator.png"
install -m 644 "$D/copyright" "$SHARE/doc/data-aggregator/copyright"
install -m 644 "$D/lintian-overrides" "$SHARE/lintian/overrides/data-aggregator"
gzip -9n < "$D/aggregator.1" > "$SHARE/man/man1/aggregator.1.gz"
COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
DATE=$(date -R -d "@$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)")
printf 'data-aggregator (%s) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- Data Aggregator maintainers <maintainers@data-aggregator.invalid>  %s\n' \
    "$VERSION" "$COMMIT" "$DATE" | gzip -9n > "$SHARE/doc/data-aggregator/changelog.gz"

# Modes: directories 755, files 644, executables 755 (the bundle's program; nothing else in it runs
# on its own: its shared libraries are loaded, not executed).
find "$PKG" -type d -exec chmod 755 {} +
find "$PKG" -type f -exec chmod 644 {} +
chmod 755 "$PKG/opt/data-aggregator/aggregator"
for script in postinst prerm postrm; do install -m 755 "$D/$script" "$PKG/DEBIAN/$script"; done

DEPENDS=$(PYTHONPATH="$ROOT" "$PYTHON" "$ROOT/packaging/deb_depends.py" "$PKG/opt/data-aggregator")
SIZE_KB=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE_KB@/$SIZE_KB/" -e "s/@DEPENDS@/$DEPENDS/" \
    "$D/control.in" > "$PKG/DEBIAN/control"
(cd "$PKG" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0r md5sum) \
    > "$PKG/DEBIAN/md5sums"
chmod 644 "$PKG/DEBIAN/control" "$PKG/DEBIAN/md5sums"

dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-gzip}" --build "$PKG" "$DEB" >/dev/null
echo "package: $DEB ($(du -m "$DEB" | cut -f1) MB)"
