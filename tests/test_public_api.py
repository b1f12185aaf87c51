"""Every module of the package imports, and every name its ``__all__`` promises exists
(the check anyio runs over its own modules)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import streammetrics

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(streammetrics.__path__, prefix="streammetrics.")
)


def test_the_walk_finds_the_package() -> None:
    for name in ("streammetrics.windows", "streammetrics.model.events", "streammetrics.aggregator"):
        assert name in MODULES


@pytest.mark.parametrize("name", ["streammetrics", *MODULES])
def test_all_names_exist(name: str) -> None:
    mod: ModuleType = importlib.import_module(name)
    names = getattr(mod, "__all__", None)
    if names is None:
        return
    assert isinstance(names, tuple | list), f"{name}.__all__ is a {type(names).__name__}"
    assert all(isinstance(n, str) for n in names)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
    dups = sorted({n for n in names if list(names).count(n) > 1})
    assert not dups, f"{name}.__all__ repeats {dups}"


def test_star_import_of_the_package() -> None:
    ns: dict[str, object] = {}
    exec("from streammetrics import *", ns)
    assert set(streammetrics.__all__) <= set(ns)
    assert ns["__version__"] == streammetrics.__version__
