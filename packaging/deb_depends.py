"""The Debian packages a bundle needs from the system: those of the libraries Qt's xcb plugin links
(`ldd` on the bundle's libqxcb.so, mapped by app/gui.py's XCB_PACKAGES, the same table that names
them when the GUI cannot start), plus libc and adduser (postinst). Prints the Depends: value.

    python packaging/deb_depends.py dist/aggregator
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# adduser: postinst. libc6: PySide6 and the other wheels are manylinux_2_28. sensible-utils: the
# bundled libblkid/libmount name sensible-pager (lintian: missing-depends-on-sensible-utils).
BASE = ["adduser", "libc6 (>= 2.28)", "sensible-utils"]


def linked_libraries(library: Path) -> list[str]:
    """Every shared library `library` needs, found or not (sonames)."""
    out = subprocess.run(["ldd", str(library)], capture_output=True, text=True, timeout=30).stdout
    return list(dict.fromkeys(re.findall(r"^\s*(\S+\.so[.\d]*)\s+=>", out, flags=re.MULTILINE)))


def depends(bundle: Path) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from app.gui import XCB_PACKAGES

    plugins = sorted(bundle.rglob("platforms/libqxcb.so"))
    packages = []
    for plugin in plugins[:1]:
        packages += [XCB_PACKAGES[lib] for lib in linked_libraries(plugin) if lib in XCB_PACKAGES]
    return BASE + sorted(dict.fromkeys(packages))


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python packaging/deb_depends.py BUNDLE_DIR")
    print(", ".join(depends(Path(sys.argv[1]))))
