"""Conflict-free replicated data types, with Redis storage and multi-region sync."""

from __future__ import annotations

__all__: list[str] = []
