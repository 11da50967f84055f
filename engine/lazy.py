"""A module imported on first use: `pl = lazy_module("polars")` at the top of a module costs nothing
until code reads an attribute of `pl` (issue 12 item 4: an idle one-tag stream moves its few rows
as plain columns, `engine.tags.TagBatch`, and must not carry Polars' ~35 MB for nothing).

Not `importlib.util.LazyLoader`: that one puts a half-made module into `sys.modules`, which the
module's own submodule imports then see, and before Python 3.12 two threads touching it at once may
both run the module. Here `sys.modules` only ever holds the real module, imported under the import
lock by whichever thread comes first; the stand-in copies its attributes once and is then an
ordinary module object (attribute reads cost what they cost on the real one).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class LazyModule(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:  # only for names not copied yet
        module = importlib.import_module(self.__name__)
        self.__dict__.update({k: v for k, v in module.__dict__.items() if not k.startswith("__")})
        return getattr(module, attr)

    def __repr__(self) -> str:
        loaded = self.__name__ in sys.modules
        return f"<lazy module {self.__name__!r} ({'loaded' if loaded else 'not loaded yet'})>"


def lazy_module(name: str) -> Any:
    """The module `name` if it is imported already, else a stand-in that imports it on first use."""
    return sys.modules.get(name) or LazyModule(name)


def loaded(name: str) -> bool:
    """Has `name` really been imported (by anyone)?"""
    return name in sys.modules
