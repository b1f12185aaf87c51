"""What every case shares: the machine description, progress lines, targets and tables."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = (
    "BenchmarkError",
    "CaseResult",
    "Target",
    "fmt_num",
    "machine",
    "progress",
    "table",
    "targets_table",
)

Verdict = Literal["met", "MISSED", "n/a"]


class BenchmarkError(RuntimeError):
    """A benchmark could not measure honestly (a peer skipped work, a server died)."""


def progress(message: str) -> None:
    """One progress line on stderr, so stdout keeps only the tables."""
    print(f"  .. {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """``nproc``, the CPU model from /proc/cpuinfo and the Python version."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg": list(os.getloadavg()),
    }


@dataclass
class Target:
    """One target figure (what a case is meant to reach), beside what was measured."""

    name: str
    """What is compared, e.g. ``probe path events/s``."""
    measured: float | None
    """The figure measured; None when the case could not measure it (peer missing)."""
    op: Literal[">=", "<"]
    threshold: float
    unit: str = ""
    note: str = ""
    """Why a figure is missing, or the conditions it was measured under."""

    @property
    def verdict(self) -> Verdict:
        if self.measured is None:
            return "n/a"
        ok = self.measured >= self.threshold if self.op == ">=" else self.measured < self.threshold
        return "met" if ok else "MISSED"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


@dataclass
class CaseResult:
    """The rows a case measured, its targets and anything worth saying about them."""

    case: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "params": self.params,
            "rows": self.rows,
            "targets": [t.as_dict() for t in self.targets],
            "notes": self.notes,
        }


def fmt_num(v: Any) -> str:
    """Numbers the way a reader scans them: thousands separators, 3 significant digits."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (so the README can take it as it is)."""
    if not rows:
        return "(no rows)"
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    cells = [[fmt_num(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    head = "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |"
    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    body = [
        "| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    return "\n".join([head, rule, *body])


def targets_table(targets: Sequence[Target]) -> str:
    rows = [
        {
            "target": t.name,
            "wanted": f"{t.op} {fmt_num(t.threshold)}{(' ' + t.unit) if t.unit else ''}",
            "measured": (
                f"{fmt_num(t.measured)}{(' ' + t.unit) if t.unit else ''}"
                if t.measured is not None
                else "-"
            ),
            "verdict": t.verdict,
            "note": t.note,
        }
        for t in targets
    ]
    return table(rows, ["target", "wanted", "measured", "verdict", "note"])
