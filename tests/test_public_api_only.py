"""entur_oauth uses the public API of httpx2, authlib and anyio only (issue 17, item 2).

A private name (``Headers._list``, ``URL._uri_reference``, ``Response._content``) or a
parent class's property descriptor called by hand ties the package to one release of a
dependency. This reads every module of the package with :mod:`ast` and flags:

* ``x._name`` (or ``getattr``/``setattr``/``hasattr``/``delattr(x, "_name")``) where
  ``_name`` is not a name entur_oauth itself defines (a function, class, module, import
  alias, class attribute, ``__slots__`` entry or ``self._name = ...``);
* ``self._name`` in a class built on a dependency's class (``EnturClient``, an
  ``httpx2.Auth``) where the dependency defines ``_name`` too: that reads or overwrites
  the parent's private state;
* a descriptor's machinery called by hand (``__get__``, ``__set__``, ``__delete__``,
  ``fget``, ``fset``, ``fdel``), as in ``httpx2.AsyncClient.auth.__set__(client, ...)``;
* async-generator hooks (``sys.get_asyncgen_hooks``) used as an event loop's identity.

Two standard-library names are allowed, each for a stated reason (:data:`ALLOWED`).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import sys
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import entur_oauth

PACKAGE = Path(entur_oauth.__file__).parent
DEPENDENCIES = ("httpx2", "authlib", "anyio")
#: Standard-library private names that are fine, and why.
ALLOWED = {
    # warnings' own stacklevel arithmetic needs the caller's frames (3.12's
    # skip_file_prefixes does the same); documented in the sys module.
    "_getframe": "sys",
    # asyncio exports it in asyncio.events.__all__ for event loop implementations: the
    # running loop or None, without the exception get_running_loop() raises under trio.
    "_get_running_loop": "asyncio",
}
DESCRIPTOR_CALLS = frozenset({"__get__", "__set__", "__delete__", "fget", "fset", "fdel"})
FORBIDDEN_NAMES = frozenset({"get_asyncgen_hooks", "set_asyncgen_hooks"})
_ATTRIBUTE_FUNCTIONS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


@dataclass(frozen=True)
class Finding:
    """One use of a dependency's private machinery."""

    where: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.what}"


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _sources(root: Path) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(root.rglob("*.py")):
        yield str(path.relative_to(root.parent)), ast.parse(path.read_text(), str(path))


def _defined_names(trees: Iterable[ast.Module]) -> set[str]:
    """Every name a module of ours defines: what ``x._name`` may legitimately reach."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
                names.add(node.name.split(".")[-1])
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in {"self", "cls"}
            ):
                names.add(node.attr)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
            ):
                names |= {
                    c.value
                    for c in ast.walk(node.value)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                }
    return names


@functools.cache
def _class_definitions(dependency: str) -> dict[str, list[ast.ClassDef]]:
    """Every class definition in a dependency's source files, by class name."""
    root = Path(sys.modules[dependency].__file__ or "").parent
    found: dict[str, list[ast.ClassDef]] = {}
    for _, tree in _sources(root):
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, []).append(node)
    return found


def _private_names_of(cls: type) -> set[str]:
    """The private names a dependency's class and its dependency bases define: class
    attributes, and every ``self._name`` their source reads or sets."""
    names: set[str] = set()
    for klass in inspect.getmro(cls):
        if klass.__module__.split(".")[0] not in DEPENDENCIES:
            continue
        names |= {name for name in vars(klass) if _is_private(name)}
        # The class's source, found by name in the dependency's files: httpx2 sets a
        # public class's __module__ to "httpx2", and inspect.getsource cannot find those.
        for body in _class_definitions(klass.__module__.split(".")[0]).get(klass.__name__, []):
            names |= {
                node.attr
                for node in ast.walk(body)
                if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and _is_private(node.attr)
            }
    return names


def _parents_private_names(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """For each class of ours built (directly or through another of ours) on a
    dependency's class: the private names of those dependency classes."""
    bases: dict[str, list[ast.expr]] = {}
    imported: dict[str, tuple[str, str]] = {}  # a name -> (module, its name there)
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = node.bases
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    module = "." * node.level + (node.module or "")
                    imported[alias.asname or alias.name] = (module, alias.name)

    def resolve(base: ast.expr, seen: frozenset[str]) -> list[type]:
        dotted = ast.unparse(base)
        head, _, rest = dotted.partition(".")
        if head in DEPENDENCIES and rest:
            value: object = importlib.import_module(head)
            for part in rest.split("."):
                value = getattr(value, part)
            return [value] if isinstance(value, type) else []
        module, name = imported.get(head, ("", ""))
        if module.split(".")[0] in DEPENDENCIES:
            value = getattr(importlib.import_module(module), name)
            return [value] if isinstance(value, type) else []
        if module.endswith("_authlib"):  # our one door to authlib: its classes are authlib's
            value = getattr(importlib.import_module("entur_oauth._authlib"), name)
            return [value] if isinstance(value, type) else []
        if head in bases and head not in seen:
            return [c for b in bases[head] for c in resolve(b, seen | {head})]
        return []

    parents: dict[str, set[str]] = {}
    for name, own in bases.items():
        found = [c for b in own for c in resolve(b, frozenset({name}))]
        if found:
            parents[name] = set().union(*map(_private_names_of, found))
    return parents


class _Checker(ast.NodeVisitor):
    def __init__(self, where: str, ours: set[str], parents: dict[str, set[str]]) -> None:
        self.where = where
        self.ours = ours
        self.parents = parents
        self.classes: list[str] = []
        self.findings: list[Finding] = []

    def flag(self, node: ast.AST, what: str) -> None:
        self.findings.append(Finding(self.where, getattr(node, "lineno", 0), what))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes.append(node.name)
        self.generic_visit(node)
        self.classes.pop()

    def check(self, node: ast.AST, receiver: ast.expr, name: str) -> None:
        shown = f"{ast.unparse(receiver)}.{name}"
        if name in DESCRIPTOR_CALLS:
            self.flag(node, f"{shown}: a descriptor called by hand")
        if name in FORBIDDEN_NAMES:
            self.flag(node, f"{shown}: async-generator hooks are no event loop identity")
        if not _is_private(name):
            return
        allowed = ALLOWED.get(name)
        if allowed is not None and isinstance(receiver, ast.Name) and receiver.id == allowed:
            return
        if name not in self.ours:
            self.flag(node, f"{shown}: a private name entur_oauth does not define")
        elif (
            isinstance(receiver, ast.Name)
            and receiver.id in {"self", "cls"}
            and self.classes
            and name in self.parents.get(self.classes[-1], ())
        ):
            self.flag(node, f"{shown}: the parent class (a dependency's) defines it too")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.check(node, node.value, node.attr)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Name)
            and func.id in _ATTRIBUTE_FUNCTIONS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            self.check(node, node.args[0], node.args[1].value)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in FORBIDDEN_NAMES:
            self.flag(node, f"{node.id}: async-generator hooks are no event loop identity")


def findings(root: Path, extra: dict[str, str] | None = None) -> list[Finding]:
    """Every use of a dependency's private machinery in the package at ``root`` (and in
    ``extra`` modules, source by name, checked as if they were part of it)."""
    trees = dict(_sources(root))
    for name, source in (extra or {}).items():
        trees[name] = ast.parse(textwrap.dedent(source), name)
    ours = _defined_names(trees.values())
    parents = _parents_private_names(trees)
    found: list[Finding] = []
    for where, tree in trees.items():
        checker = _Checker(where, ours, parents)
        checker.visit(tree)
        found += checker.findings
    return found


def test_the_package_touches_no_private_name_of_its_dependencies() -> None:
    """No module of entur_oauth reads or writes a private attribute of an httpx2, authlib
    or anyio object, calls a descriptor by hand or uses async-generator hooks."""
    found = findings(PACKAGE)
    assert not found, "\n".join(map(str, found))


#: What the request path did before issue 17, one line each, in a module of its own.
_PRIVATE_USES = """
import operator
import sys

import httpx2

_ORIGIN = operator.itemgetter(0, 2, 3)
_HTTPX_AUTH = httpx2.AsyncClient.auth


class Sneaky(httpx2.AsyncClient):
    def send_fast(self, request, response, auth):
        origin = _ORIGIN(request.url._uri_reference)
        entries = getattr(request.headers, "_list", None)
        request.headers._list.append((b"a", b"a", b"b"))
        response._content = b"[redacted]"
        _HTTPX_AUTH.__set__(self, auth)
        httpx2.AsyncClient.auth.fset(self, auth)
        hook = sys.get_asyncgen_hooks().firstiter
        self._transport = None
        return origin, entries, hook
"""
_EXPECTED = [
    "request.url._uri_reference",
    "request.headers._list",  # getattr(request.headers, "_list", None)
    "request.headers._list",
    "response._content",
    "_HTTPX_AUTH.__set__",
    "httpx2.AsyncClient.auth.fset",
    "get_asyncgen_hooks",
    "self._transport",
]


def test_the_check_finds_each_kind_of_private_use(tmp_path: Path) -> None:
    """The check is real: each way the request path used httpx2's privates before this
    issue (a URL's parse, the headers' list, a response's body, the parent's ``auth``
    property called by hand, asyncgen hooks as a loop identity, the parent's own private
    attribute set on ``self``) is flagged, and our own ``self._manager`` is not."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "ours.py").write_text(
        textwrap.dedent(
            """
            class Ours:
                __slots__ = ("_slot",)

                def __init__(self, manager):
                    self._manager = manager

                def use(self, other):
                    return self._manager, other._manager, self._slot
            """
        )
    )
    found = findings(tmp_path / "pkg", {"pkg/sneaky.py": _PRIVATE_USES})
    shown = [f.what.split(":")[0] for f in found]
    for expected in _EXPECTED:
        assert any(expected in s for s in shown), (expected, shown)
    assert not [f for f in found if "ours.py" in f.where], found


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_allowed_standard_library_names_only_on_their_module(name: str, tmp_path: Path) -> None:
    """An allowed standard-library name is allowed on its own module only."""
    (tmp_path / "pkg").mkdir()
    source = f"import {ALLOWED[name]}\nx = {ALLOWED[name]}.{name}\ny = other.{name}\n"
    found = findings(tmp_path / "pkg", {"pkg/m.py": source})
    assert [f.what.split(":")[0] for f in found] == [f"other.{name}"]
