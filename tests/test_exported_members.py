"""The public API is exactly what __all__ says."""

from __future__ import annotations

import types

import entur_oauth


def test_all_is_the_public_surface() -> None:
    """Every public name is in __all__, and every name in __all__ exists."""
    public = {
        name
        for name in dir(entur_oauth)
        if not name.startswith("_") and not isinstance(getattr(entur_oauth, name), types.ModuleType)
    }
    assert set(entur_oauth.__all__) == public
    assert entur_oauth.__all__ == sorted(entur_oauth.__all__)


def test_version_comes_from_the_installed_metadata() -> None:
    """__version__ is read from the package metadata."""
    from importlib.metadata import version

    assert entur_oauth.__version__ == version("entur-oauth")
