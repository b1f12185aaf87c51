"""The package's version, in a module of its own at the bottom of the layers: the CLI and
the HTTP app report it, and importing it from the package's ``__init__`` would make every
such module depend on the whole public API above it."""

from __future__ import annotations

from typing import Final

__all__ = ("__version__",)

__version__: Final = "1.0.0"
