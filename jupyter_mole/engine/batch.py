"""A batch of contexts, as columns' names and rows of values.

The engine moves results around a batch at a time, as tuples rather than one
dict per job: at a million jobs, dicts would cost most of the engine's time and
memory. A row's values are in the order of ``names``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["Batch"]


@dataclasses.dataclass
class Batch:
    names: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def __len__(self) -> int:
        return len(self.rows)

    def context(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a dict (for messages and conditions, not hot paths)."""
        return dict(zip(self.names, self.rows[i]))

    def column(self, name: str) -> list[Any]:
        i = self.names.index(name)
        return [row[i] for row in self.rows]
