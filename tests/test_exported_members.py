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


def test_testing_kit_exports_exactly_its_public_names() -> None:
    """entur_oauth.testing's __all__ is its public surface; the servers behind
    FakeEntur.serve() (serving, pick_server, serve_builtin) are private, not half public."""
    import entur_oauth.testing as testing

    public = {
        name
        for name in dir(testing)
        if not name.startswith("_") and not isinstance(getattr(testing, name), types.ModuleType)
    }
    assert set(testing.__all__) == public
    assert testing.__all__ == sorted(testing.__all__)
    assert public == {"FakeClock", "FakeEntur", "RecordedRequest", "ScriptedResponse"}


def test_names_load_on_first_use() -> None:
    """Every name in __all__ resolves (imported on first use) to the class or function its
    private module defines, and is then cached on the package."""
    import importlib

    for name in entur_oauth.__all__:
        value = getattr(entur_oauth, name)
        module = importlib.import_module(value.__module__)
        assert getattr(module, name) is value
        assert vars(entur_oauth)[name] is value
