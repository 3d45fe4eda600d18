"""Sessions: `nox` runs lint, typecheck, tests (each installed Python), examples, lowest
(the tests on the lowest declared version of every dependency) and build (the wheel, installed
and tried away from the source tree)."""

from __future__ import annotations

import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import nox

nox.needs_version = ">=2024.4.15"
nox.options.sessions = ["lint", "typecheck", "tests", "examples", "lowest", "build"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)
DEFAULT_PYTHON = PYTHONS[0]


def group(name: str) -> list[str]:
    """Return the packages of one [dependency-groups] entry in pyproject.toml."""
    return list(nox.project.dependency_groups(PYPROJECT, name))


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite (every async test on asyncio and trio) with coverage."""
    session.install("-e", ".[redis]", *group("test"))
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report", "--fail-under=85")


def floors() -> list[str]:
    """Pin every runtime dependency (the redis and otel extras too) to the floor
    pyproject.toml gives."""
    from packaging.requirements import Requirement  # nox itself depends on packaging

    project = PYPROJECT["project"]
    pins = []
    extras = project["optional-dependencies"]
    for text in [*project["dependencies"], *extras["redis"], *extras["otel"]]:
        requirement = Requirement(text)
        lows = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(lows) != 1:
            raise ValueError(f"{text!r}: every dependency needs exactly one '>=' floor")
        pins.append(f"{requirement.name}=={lows[0]}")
    return pins


@nox.session(python=DEFAULT_PYTHON)
def lowest(session: nox.Session) -> None:
    """Run the test suite on the lowest version of every declared dependency."""
    pins = floors()
    session.log("floors: " + " ".join(pins))
    # One resolve: the test tools adapt to the floors, never the other way round.
    session.install("-e", ".[redis]", *group("test"), *pins)
    session.run("pytest", *session.posargs)


@nox.session(python=DEFAULT_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(*group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=DEFAULT_PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, the examples, the typing tests and the benchmarks."""
    session.install("-e", ".[redis]", *group("typecheck"))
    session.run("mypy", "entur_oauth", "tests/typing", "examples", "benchmarks")


@nox.session(python=DEFAULT_PYTHON)
def examples(session: nox.Session) -> None:
    """Run every example against the fake Entur on a loopback port."""
    session.install("-e", ".", *group("test"))
    session.run("pytest", "tests/test_examples.py", *session.posargs)


@nox.session(python=DEFAULT_PYTHON)
def demo(session: nox.Session) -> None:
    """The main job: the real client against the embedded fake Entur (no credentials)."""
    session.install("-e", ".", "uvicorn>=0.30")
    session.run("entur-oauth", "demo", *session.posargs)


@nox.session(python=DEFAULT_PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks against bare httpx2 and raw authlib; writes benchmarks/RESULTS.md."""
    session.install("-e", ".[redis]", *group("bench"))
    session.run("python", "benchmarks/run.py", *session.posargs)


#: What the build session runs with the installed wheel: the pytest fixtures, as a user would.
WHEEL_FIXTURE_TEST = """
import pytest

import entur_oauth


def test_installed_from_the_wheel():
    assert "site-packages" in entur_oauth.__file__
    assert entur_oauth.__version__


@pytest.mark.anyio
async def test_fixtures(entur_fake, entur_client):
    async with entur_client:
        assert (await entur_client.get("/x")).status_code == 200
    assert entur_fake.token_count == 1


def test_served(entur_env, entur_fake_url):
    assert entur_env["ENTUR_API_BASE_URL"] == entur_fake_url
"""


@nox.session(python=DEFAULT_PYTHON)
def build(session: nox.Session) -> None:
    """Build sdist and wheel into dist/, check them, and try the wheel in a fresh venv.

    The wheel is installed into a new virtual environment in a temporary directory (away
    from the source tree, so nothing is imported from the checkout), where `entur-oauth
    demo` and a small test file using the pytest fixtures must pass.
    """
    session.install(*group("build"))
    dist = Path("dist")
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    artifacts = sorted(str(p) for p in dist.iterdir())
    session.run("twine", "check", "--strict", *artifacts)
    (wheel,) = dist.glob("*.whl")
    session.run("check-wheel-contents", str(wheel))
    with tempfile.TemporaryDirectory(prefix="entur-oauth-wheel-") as tmp:
        where = Path(tmp)
        venv = where / "venv"
        session.run("python", "-m", "venv", str(venv))
        bin_dir = venv / ("Scripts" if sys.platform == "win32" else "bin")
        python = str(bin_dir / "python")
        session.run(
            python, "-m", "pip", "install", "--quiet", str(wheel.resolve()), "pytest", external=True
        )
        (where / "test_fixtures.py").write_text(textwrap.dedent(WHEEL_FIXTURE_TEST))
        with session.chdir(where):
            session.run(str(bin_dir / "entur-oauth"), "demo", "--calls", "5", external=True)
            session.run(
                python,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "test_fixtures.py",
                external=True,
            )
