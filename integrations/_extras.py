"""Say which extra to install when an integration is imported without its library."""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(module: str, extra: str, cause: ImportError) -> ImportError:
    """The error to raise from ``module`` when importing its library failed::

    try:
        import httpx
    except ImportError as exc:
        raise missing_extra(__name__, "httpx", exc) from exc
    """
    library = cause.name or extra
    return ImportError(
        f"{module} needs {library}, which is not installed: pip install 'idemkit[{extra}]'",
        name=cause.name,
    )
