"""Adapters for frameworks, clients, message consumers and metrics."""

from __future__ import annotations

__all__: list[str] = []
