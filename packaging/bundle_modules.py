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
)


def dropped(dest: str) -> bool:
    """Whether the file that would go to `dest` in the bundle is left out."""
    return dest.replace("\\", "/").startswith(DROPPED_PREFIXES)


def connector_modules() -> list[str]:
    """engine/connectors/registry.py BUILTIN (type -> module) and each protocol's connector module
    (protocols/__init__.py TYPES, named to the registry by `register_all`)."""
    import protocols
    from engine.connectors import registry

    mods = list(registry.BUILTIN.values())
    mods += [f"protocols.{name}.connector" for name in protocols.TYPES]
    return list(dict.fromkeys(mods))


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


def _literal(path: Path, name: str):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{path}: no {name} = ... found")


def by_name_modules() -> list[str]:
    """Every module of ours the app imports by name (deduplicated, in a stable order)."""
    mods = connector_modules() + simulator_modules() + transform_modules() + warm_modules() + page_modules()
    return list(dict.fromkeys(mods))


# Third-party packages that load their own parts by name (string imports, entry points).
THIRD_PARTY_SUBMODULES = ["uvicorn", "asyncua", "pymodbus", "apscheduler", "keyring.backends", "opendnp3"]
THIRD_PARTY_DATA = ["fastapi_offline", "asyncua"]  # Swagger UI's files; asyncua's XML address space
THIRD_PARTY_METADATA = ["data-aggregator", "apscheduler", "keyring", "fastapi", "pydantic", "uvicorn"]
