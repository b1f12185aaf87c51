"""Where things are, whatever the depth of the test file that asks."""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: the repository's root: README.md, blueprints/, deploy/, examples/
ROOT: Final = Path(__file__).resolve().parents[2]
#: the blueprints shipped with the project
BLUEPRINTS: Final = ROOT / "blueprints"
#: this folder, where the programs the tests run as child processes live
SUPPORT: Final = Path(__file__).resolve().parent
