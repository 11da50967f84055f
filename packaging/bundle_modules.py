"""What the PyInstaller bundle must carry that its import scan cannot see: the modules the app imports
by name (the registries, the warm-up list, the GUI's pages, the simulators), read FROM those maps so
a connector added to a registry is bundled without touching packaging/. Used by aggregator.spec (and
packaging/windows/aggregator.spec) and by tests/packaging/test_bundle_modules.py.

Run from the repository root (the spec puts it first on sys.path)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Qt modules PySide6-Essentials/Addons may carry that nothing of ours imports (the GUI uses QtCore,
# QtGui, QtWidgets; pyqtgraph and NodeGraphQt pull QtSvg/QtOpenGL*/QtPrintSupport themselves).
QT_EXCLUDES = [
    f"PySide6.{m}"
    for m in (
        "QtWebEngineCore",
        "QtWebEngineWidgets",
        "QtWebEngineQuick",
        "QtWebChannel",
        "QtWebSockets",
        "QtWebView",
        "Qt3DCore",
        "Qt3DRender",
        "Qt3DInput",
        "Qt3DLogic",
        "Qt3DAnimation",
        "Qt3DExtras",
        "QtQuick3D",
        "QtQuick",
        "QtQuickWidgets",
        "QtQuickControls2",
        "QtQml",
        "QtMultimedia",
        "QtMultimediaWidgets",
        "QtSpatialAudio",
        "QtCharts",
        "QtDataVisualization",
        "QtGraphs",
        "QtPdf",
        "QtPdfWidgets",
        "QtBluetooth",
        "QtNfc",
        "QtPositioning",
        "QtLocation",
        "QtSensors",
        "QtSerialPort",
        "QtSerialBus",
        "QtRemoteObjects",
        "QtScxml",
        "QtStateMachine",
        "QtTextToSpeech",
        "QtHttpServer",
        "QtDesigner",
        "QtUiTools",
        "QtHelp",
        "QtSql",
        "QtTest",
        "QtNetworkAuth",
        "QtConcurrent",
        "QtDBus",
    )
]
# Python packages a dev environment may have that the product never imports at run time, and the
# parts of pyarrow nothing of ours uses (Flight RPC, its cloud filesystems: S3 goes through obstore;
# pyarrow.fs imports them only if present).
PY_EXCLUDES = [
    "tkinter",
    "pandas",
    "matplotlib",
    "IPython",
    "pytest",
    "hypothesis",
    "scipy",
    "PyQt5",
    "PyQt6",
]
PY_EXCLUDES += [
    f"pyarrow.{m}"
    for m in ("flight", "_flight", "_s3fs", "_gcsfs", "_azurefs", "_hdfs", "tests", "cuda", "_cuda")
]
# pyarrow modules nothing imports, or imports only if present (pyarrow.dataset's ORC and Parquet
# encryption are try/except): Substrait plans, ORC files, Parquet encryption. Their shared libraries
# stay: pyarrow.lib itself needs libarrow_substrait, _dataset, _acero and libparquet.
PY_EXCLUDES += [
    f"pyarrow.{m}"
    for m in (
        "substrait",
        "_substrait",
        "orc",
        "_orc",
        "_dataset_orc",
        "parquet.encryption",
        "_parquet_encryption",
        "_dataset_parquet_encryption",
    )
]
# setuptools and pkg_resources come in with the build venv, and with them PyInstaller's runtime hooks
# pyi_rth_pkgres and pyi_rth_setuptools, which import both at every start (~0.3 s of CPU before
# main()). Nothing imports them at run time (pytz tries importlib.resources first; numpy.distutils and
# cffi's setuptools_ext are build-time modules).
PY_EXCLUDES += ["pkg_resources", "setuptools", "_distutils_hack"]
# Files the analysis collects that the bundle does not need (paths inside the bundle): the native
# libraries behind the excluded pyarrow modules, C headers, and Qt's translations (the UI is English).
DROPPED_PREFIXES = (
    "pyarrow/libarrow_flight",
    "pyarrow/libarrow_python_flight",
    "pyarrow/libarrow_s3",
    "pyarrow/include/",
    "pyarrow/src/",
    "PySide6/Qt/translations/",
    "PySide6/include/",
    "pyarrow/libarrow_python_parquet_encryption",
    "pyarrow/tests/",
)
# Type stubs and Cython/C sources and headers that packages ship beside their modules (~2 MB).
DROPPED_SUFFIXES = (".pyi", ".pxd", ".pxi", ".pyx", ".h", ".hpp")


# Packages a build may leave out (build.sh --without-connectorx): the code copes when they are missing.
OPTIONAL = {"connectorx": "the mysql source reads through PyMySQL instead (engine/connectors/mysql.py)"}


def optional_excludes(names: str) -> list[str]:
    """The packages named (comma-separated) in AGGREGATOR_BUNDLE_EXCLUDE; only those in OPTIONAL."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in OPTIONAL]
    if unknown:
        raise SystemExit(
            f"AGGREGATOR_BUNDLE_EXCLUDE: {', '.join(unknown)} cannot be left out (only: {', '.join(OPTIONAL)})"
        )
    return wanted


def dropped(dest: str) -> bool:
    """Whether the file that would go to `dest` in the bundle is left out."""
    dest = dest.replace("\\", "/")
    return dest.startswith(DROPPED_PREFIXES) or dest.endswith(DROPPED_SUFFIXES)


def connector_modules() -> list[str]:
    """engine/connectors/registry.py BUILTIN (type -> module) and each protocol's connector module
    (protocols/__init__.py TYPES, named to the registry by `register_all`)."""
    import protocols
    from engine.connectors import registry

    mods = list(registry.BUILTIN.values())
    mods += [f"protocols.{name}.connector" for name in protocols.TYPES]
    return list(dict.fromkeys(mods))


def format_modules() -> list[str]:
    """engine/connectors/formats FORMATS: each file format's module is imported on first use, by name
    (its `_PARTS` table: format -> module in that package, and the names of its functions)."""
    from engine.connectors import formats

    parts = getattr(formats, "_PARTS", {})
    return list(dict.fromkeys(f"{formats.__name__}.{entry[0]}" for entry in parts.values()))


def simulator_modules() -> list[str]:
    """`aggregator simulate P` imports protocols.P.simulator by name (app/simulate.py)."""
    from app.simulate import DEFAULT_PORTS

    return [f"protocols.{name}.simulator" for name in DEFAULT_PORTS]


def transform_modules() -> list[str]:
    """engine/transforms/registry.py BUILTIN (type -> module under engine.transforms), and the
    catalog that older versions of the registry imported whole."""
    from engine.transforms import registry

    prefix = getattr(registry, "_PACKAGE", "engine.transforms.")
    mods = [prefix + module for module in getattr(registry, "BUILTIN", {}).values()]
    return [*dict.fromkeys(mods), "engine.transforms.catalog"]


def warm_modules() -> list[str]:
    """engine/api/core.py WARM_MODULES: imported by name after the window paints."""
    return list(_literal(ROOT / "engine" / "api" / "core.py", "WARM_MODULES"))


def page_modules() -> list[str]:
    """ui/main_window.py's PageEntry(...) modules, read from the source (importing it needs Qt)."""
    tree = ast.parse((ROOT / "ui" / "main_window.py").read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "PageEntry":
            found.append(node.args[3].value)
    return found


def lazy_modules() -> list[str]:
    """Every `lazy_module("name")` of app/, engine/, protocols/ and ui/ (engine/lazy.py imports the
    module by that name on first use), read from the sources."""
    found = []
    for package in ("app", "engine", "protocols", "ui"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                called = isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_module"
                if called and node.args and isinstance(node.args[0], ast.Constant):
                    found.append(node.args[0].value)
    return list(dict.fromkeys(found))


def _literal(path: Path, name: str):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{path}: no {name} = ... found")


def by_name_modules() -> list[str]:
    """Every module the app imports by name (ours, and third-party ones imported lazily), deduplicated,
    in a stable order."""
    mods = (
        connector_modules()
        + format_modules()
        + simulator_modules()
        + transform_modules()
        + warm_modules()
        + page_modules()
        + lazy_modules()
    )
    return list(dict.fromkeys(mods))


# Third-party packages that load their own parts by name (string imports, entry points).
THIRD_PARTY_SUBMODULES = [
    "uvicorn",
    "asyncua",
    "pymodbus",
    "apscheduler",
    "keyring.backends",
    "opendnp3",
    "uvloop",
]
THIRD_PARTY_DATA = ["fastapi_offline", "asyncua"]  # Swagger UI's files; asyncua's XML address space
THIRD_PARTY_METADATA = ["data-aggregator", "apscheduler", "keyring", "fastapi", "pydantic", "uvicorn"]
