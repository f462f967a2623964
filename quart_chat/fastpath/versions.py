"""The installed versions of the libraries whose internals the fast paths use."""

from __future__ import annotations

from importlib import metadata


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"




def versions() -> str:
    """``quart X, hypercorn Y, wsproto Z``, for log lines."""
    return ", ".join(f"{d} {_version(d)}" for d in ("quart", "hypercorn", "wsproto"))
