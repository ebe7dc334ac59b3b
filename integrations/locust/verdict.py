"""The outcome of verifying a run: named checks that passed, and violations with examples.

Client-side checks (answers per key) and server-side check hooks both write into one
:class:`Verification`; the run passes when no violation was recorded. Every violation is
counted; only the first few examples of each kind are kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Verification"]

EXAMPLES = 10  # examples kept per kind of violation; the count is always complete


@dataclass
class Verification:
    checks: dict[str, str] = field(default_factory=dict)  # check name -> one-line summary
    violations: dict[str, list[str]] = field(default_factory=dict)  # kind -> examples
    counts: Counter[str] = field(default_factory=Counter)  # kind -> number of violations

    @property
    def ok(self) -> bool:
        return not self.counts

    def fail(self, kind: str, message: str, n: int = 1) -> None:
        self.counts[kind] += n
        examples = self.violations.setdefault(kind, [])
        if len(examples) < EXAMPLES:
            examples.append(message)

    def merge(self, other: Verification | Mapping[str, Any]) -> None:
        """Add another verification (or its :meth:`to_dict`) into this one."""
        doc = other.to_dict() if isinstance(other, Verification) else other
        self.checks.update(doc.get("checks", {}))
        for kind, n in doc.get("counts", {}).items():
            self.counts[kind] += int(n)
            examples = self.violations.setdefault(kind, [])
            room = EXAMPLES - len(examples)
            examples.extend(doc.get("violations", {}).get(kind, [])[: max(room, 0)])

    def lines(self) -> list[str]:
        out = [f"idempotency verification: {'PASS' if self.ok else 'FAIL'}"]
        out += [f"  {name}: {summary}" for name, summary in self.checks.items()]
        for kind, n in sorted(self.counts.items()):
            out.append(f"  VIOLATION {kind}: {n}")
            out += [f"    - {example}" for example in self.violations.get(kind, [])]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": dict(self.checks),
            "counts": dict(self.counts),
            "violations": {k: list(v) for k, v in self.violations.items()},
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Verification:
        result = cls()
        result.merge(doc)
        return result
