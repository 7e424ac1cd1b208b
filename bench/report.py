"""Benchmark results: one `Row` per figure, printed as a table or passed between processes as JSON."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Row:
    bench: str
    figure: str
    value: str  # already formatted, with its unit
    target: str = ""  # "" when the issue sets none: the figure is reported, not judged
    passed: bool | None = None
    competitor: str = ""
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "info"
        return "pass" if self.passed else "MISS"


def to_json(rows: Iterable[Row]) -> str:
    return json.dumps([asdict(r) for r in rows])


def from_json(text: str) -> list[Row]:
    return [Row(**item) for item in json.loads(text)]


def table(rows: Sequence[Row]) -> str:
    headers = ("bench", "figure", "measured", "target", "result", "competitor")
    cells = [(r.bench, r.figure, r.value, r.target or "-", r.verdict, r.competitor or "-") for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(c) for c in cells)
    notes = [f"  [{r.bench}] {r.figure}: {r.note}" for r in rows if r.note]
    if notes:
        out.append("")
        out.append("notes:")
        out.extend(notes)
    return "\n".join(out)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank: with few samples p99 is the maximum, as it should be."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if abs(seconds) >= 0.01 else f"{seconds * 1000:.1f} ms"


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"
