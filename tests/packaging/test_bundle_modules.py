"""The bundle's hidden imports come from the registries: every module the app imports by name is
in packaging/bundle_modules.py's list, and every place that imports by name is one it reads."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "packaging"))
import bundle_modules as bm


def test_every_registered_connector_module_is_bundled():
    import protocols
    from engine.connectors import registry

    mods = bm.by_name_modules()
    assert set(registry.BUILTIN.values()) <= set(mods)
    assert {f"protocols.{name}.connector" for name in protocols.TYPES} <= set(mods)
    from engine.transforms import registry as transforms

    assert {f"engine.transforms.{m}" for m in getattr(transforms, "BUILTIN", {}).values()} <= set(mods)


def test_every_file_format_module_is_bundled():
    """FORMATS imports each format's module by name on first use: without them the bundle's `demo`
    failed with "No module named 'engine.connectors.formats.json'" (seen on a build of 76b2344)."""
    from engine.connectors import formats

    mods = set(bm.by_name_modules())
    for name in formats.FORMATS:
        module = f"engine.connectors.formats.{formats._PARTS[name][0]}"
        assert module in mods, name
    on_disk = {p.stem for p in (REPO / "engine" / "connectors" / "formats").glob("*.py")} - {
        "__init__",
        "common",
    }
    assert {f"engine.connectors.formats.{m}" for m in on_disk} <= mods


def test_modules_imported_lazily_are_bundled():
    assert "polars" in bm.lazy_modules() and "polars" in bm.by_name_modules()


def test_every_listed_module_exists():
    missing = [m for m in bm.by_name_modules() if importlib.util.find_spec(m) is None]
    assert missing == []


# The modules that import ours by a name made at run time, and what bundle_modules reads for each.
# A new place that does so must be added here and to bundle_modules.by_name_modules.
KNOWN_SITES = {
    "engine/connectors/registry.py": "connector_modules",  # BUILTIN and protocols' provide()
    "engine/transforms/registry.py": "transform_modules",  # its BUILTIN: type -> module
    "engine/api/core.py": "warm_modules",
    "ui/main_window.py": "page_modules",
    "app/simulate.py": "simulator_modules",
    "engine/streaming/worker.py": "connector_modules",  # 'module:Class' of a registered connector
    "engine/connectors/formats/__init__.py": "format_modules",  # FORMATS: a module per format, on first use
    "engine/lazy.py": "lazy_modules",  # lazy_module("polars"): imported on first use
}


def test_no_unknown_import_by_name():
    sites = set()
    for package in ("app", "engine", "protocols", "ui"):
        for path in (REPO / package).rglob("*.py"):
            if re.search(r"import_module\(|__import__\(", path.read_text(encoding="utf-8")):
                sites.add(path.relative_to(REPO).as_posix())
    assert sites == set(KNOWN_SITES), "a new import by name: add it to packaging/bundle_modules.py"


def test_the_spec_uses_the_derived_lists():
    spec = (REPO / "packaging" / "aggregator.spec").read_text()
    assert "bm.by_name_modules()" in spec and '(str(ROOT / "resources"), "resources")' in spec
    windows = (REPO / "packaging" / "windows" / "aggregator.spec").read_text()
    assert "bm.by_name_modules()" in windows


@pytest.mark.parametrize(
    ("dest", "dropped"),
    [
        ("pyarrow/libarrow_flight.so.2600", True),
        ("PySide6/Qt/translations/qtbase_de.qm", True),
        ("pyarrow/libarrow.so.2600", False),
        ("PySide6/Qt/plugins/platforms/libqxcb.so", False),
        ("resources/themes/dark.qss", False),
        ("pyarrow/lib.pyi", True),
        ("pyarrow/table.pxi", True),
        ("numpy/_core/include/numpy/ndarraytypes.h", True),
        ("pyarrow/tests/data/v0.7.1.parquet", True),
        ("pyarrow/libarrow_python_parquet_encryption.so.2600", True),
        ("pyarrow/libarrow_substrait.so.2600", False),  # pyarrow.lib itself needs it
        ("pyarrow/libarrow_python.so.2600", False),
        ("PySide6/Qt/lib/libicudata.so.73", False),
    ],
)
def test_dropped_files(dest, dropped):
    assert bm.dropped(dest) is dropped


def test_build_time_modules_are_excluded():
    """setuptools/pkg_resources would bring PyInstaller's runtime hooks that import them at every
    start; the app itself never imports them (checked: no import in app/, engine/, protocols/, ui/)."""
    assert {"pkg_resources", "setuptools"} <= set(bm.PY_EXCLUDES)
    ours = [p for folder in ("app", "engine", "protocols", "ui") for p in (REPO / folder).rglob("*.py")]
    for path in ours:
        text = path.read_text()
        assert "import pkg_resources" not in text and "import setuptools" not in text, path


def test_optional_excludes():
    assert bm.optional_excludes("") == []
    assert bm.optional_excludes("connectorx") == ["connectorx"]
    with pytest.raises(SystemExit, match="polars cannot be left out"):
        bm.optional_excludes("connectorx,polars")
