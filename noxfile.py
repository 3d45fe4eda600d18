"""Sessions. ``nox`` runs what CI runs, in about a quarter of an hour on two cores:

* ``lint`` (ruff check, ruff format --check) and ``typecheck`` (mypy --strict);
* ``tests`` on every Python of the classifiers: the in-process suite (``-m "not slow"``) on
  each, and on the newest also the tests that start processes or servers (``slow``: the CLI,
  the examples, the README, fleets, Redis, uvicorn), so those run once, not once per Python;
* ``lowest``: the whole suite on the lowest declared version of every runtime dependency;
* ``build``: sdist and wheel, checked, and the wheel tried in a fresh venv;
* ``coverage``: combines what the test sessions measured (subprocesses included) and
  fails under 95 % of ``entur_oauth``.

Not by default: ``latest`` (everything at its newest: how a maintainer learns the lock
needs a bump), ``lock`` (refresh ``uv.lock``), ``demo`` and ``bench``.

The toolchain is locked. Every session but ``lowest`` and ``latest`` installs the exact
versions in ``uv.lock`` (``uv sync --locked`` into the session's venv), so a session passes
or fails because of the repository, never because a tool or a dependency released something
overnight. Why uv's lock: it is one file for every Python and platform the project supports
(a pip-tools requirements file is per interpreter), it records the hash of every artifact,
``uv sync`` installs it exactly (and removes what is not in it), it is read from the
standard ``[dependency-groups]`` table, and nox drives uv natively (``venv_backend="uv"``).
The package's own ``>=`` floors are untouched: the lock pins the tools we test with, not
what users may install. ``nox -s lock`` refreshes it (``nox -s lock -- --upgrade-package
redis`` bumps one); a pull request that changes dependencies must commit the new lock, as
``--locked`` refuses a lock that no longer matches ``pyproject.toml``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "typecheck", "tests", "lowest", "build", "coverage"]
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT)
DEFAULT_PYTHON = PYTHONS[0]
NEWEST_PYTHON = PYTHONS[-1]

#: Where each test session leaves its coverage data (one folder per session, so a session
#: run again replaces its own data and no other's); the coverage session combines them.
COVERAGE_DATA = Path(".nox", "coverage-data").resolve()  # beside the venvs, not in one

#: pytest-xdist: four workers (``ENTUR_TEST_WORKERS`` to change). Four on two cores, as the
#: slow tests mostly wait on processes and servers: the whole suite took 3.1 min with 4
#: workers against 6.8 min with 2 on this 2-core machine.
WORKERS = ("-n", os.environ.get("ENTUR_TEST_WORKERS", "4"))
#: The whole suite keeps each test file on one worker, so that a file's session fixtures
#: (Redis clusters, Sentinels) start once, and the heavy files spread over the workers
#: (``--dist loadgroup``, slow tests grouped by file and the rest sent to any free worker,
#: ran several 16-process fleets at once and took longer).
XDIST = (*WORKERS, "--dist", "loadfile")
#: The in-process part, whole files per worker too: with ``--dist load`` (each test to the
#: next free worker) a telemetry test saw the token gauge of another file's client that was
#: still alive in its worker (tests-3.12 failed once in two fresh-clone runs).
IN_PROCESS = (*WORKERS, "--dist", "loadfile", "-m", "not slow")


def group(name: str) -> list[str]:
    """Return the packages of one [dependency-groups] entry in pyproject.toml."""
    return list(nox.project.dependency_groups(PYPROJECT, name))


def uv() -> str:
    """The uv that nox runs on: the uv package beside nox (as CI installs it), else PATH's."""
    try:
        from uv import find_uv_bin
    except ImportError:
        return shutil.which("uv") or "uv"
    return str(find_uv_bin())


def sync(session: nox.Session, *args: str) -> None:
    """Install exactly what uv.lock pins for ``args`` (groups, extras) into the session."""
    session.run_install(
        uv(),
        "sync",
        "--locked",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
        external=True,
    )


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite (every async test on asyncio and trio) with coverage: the in-process
    part on every Python, the part that starts processes or servers on the newest only."""
    sync(session, "--group", "test", "--extra", "redis")
    data = COVERAGE_DATA / session.name
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    part = XDIST if session.python == NEWEST_PYTHON else IN_PROCESS
    session.run(
        *("coverage", "run", "-m", "pytest", *part, *session.posargs),
        # Absolute, so that subprocesses (xdist's workers, the CLI, the examples) started
        # in other folders write their data beside it.
        env={"COVERAGE_FILE": str(data / ".coverage")},
    )


@nox.session(python=DEFAULT_PYTHON)
def coverage(session: nox.Session) -> None:
    """Combine the coverage of the tests sessions (subprocesses included); >= 95 %."""
    sync(session, "--only-group", "coverage")
    folders = sorted(str(p) for p in COVERAGE_DATA.glob("*") if p.is_dir())
    if not folders:
        session.error("no coverage data: run the tests sessions first (nox -s tests)")
    session.log("combining " + ", ".join(Path(f).name for f in folders))
    env = {"COVERAGE_FILE": str(COVERAGE_DATA / ".coverage")}
    session.run("coverage", "erase", env=env)
    session.run("coverage", "combine", "--keep", "--quiet", *folders, env=env)
    session.run("coverage", "report", "--fail-under=95", env=env)


def floors() -> list[str]:
    """Pin every runtime dependency (every extra's too) to the floor pyproject.toml gives."""
    from packaging.requirements import Requirement  # nox itself depends on packaging

    project = PYPROJECT["project"]
    extras = [text for texts in project["optional-dependencies"].values() for text in texts]
    pins = []
    for text in [*project["dependencies"], *extras]:
        requirement = Requirement(text)
        lows = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(lows) != 1:
            raise ValueError(f"{text!r}: every dependency needs exactly one '>=' floor")
        pins.append(f"{requirement.name}=={lows[0]}")
    return pins


@nox.session(python=DEFAULT_PYTHON)
def lowest(session: nox.Session) -> None:
    """Run the whole test suite on the lowest version of every declared dependency (not
    from the lock: the floors are what it tests)."""
    pins = floors()
    session.log("floors: " + " ".join(pins))
    # One resolve: the test tools adapt to the floors, never the other way round.
    session.install("-e", ".[redis]", *group("test"), *pins)
    session.run("pytest", *XDIST, *session.posargs)


@nox.session(python=NEWEST_PYTHON, default=False)
def latest(session: nox.Session) -> None:
    """Lint, typecheck and test with the newest release of everything (not from the lock):
    when this fails and the locked sessions pass, the world moved; fix, then ``nox -s lock``."""
    session.install(
        "--upgrade",
        "--resolution",
        "highest",
        "-e",
        ".[redis]",
        *group("test"),
        *group("typecheck"),
        *group("lint"),
    )
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "entur_oauth", "tests/typing", "examples", "benchmarks")
    session.run("pytest", *XDIST, *session.posargs)


@nox.session(python=False, default=False)
def lock(session: nox.Session) -> None:
    """Refresh uv.lock to the newest versions pyproject.toml allows (``-- ARGS`` go to
    ``uv lock`` instead, e.g. ``nox -s lock -- --upgrade-package redis``)."""
    session.run(uv(), "lock", *(session.posargs or ["--upgrade"]), external=True)


@nox.session(python=DEFAULT_PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    sync(session, "--only-group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=DEFAULT_PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package, the examples, the typing tests and the benchmarks."""
    sync(session, "--group", "typecheck", "--extra", "redis")
    session.run("mypy", "entur_oauth", "tests/typing", "examples", "benchmarks")


@nox.session(python=DEFAULT_PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """The main job: the real client against the embedded fake Entur (no credentials)."""
    sync(session, "--group", "demo")
    session.run("entur-oauth", "demo", *session.posargs)


@nox.session(python=DEFAULT_PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks against bare httpx2 and raw authlib; writes benchmarks/RESULTS.md."""
    sync(session, "--group", "bench", "--extra", "redis")
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
    from the source tree, so nothing is imported from the checkout), with its dependencies
    and pytest at the versions of uv.lock; there `entur-oauth demo` and a small test file
    using the pytest fixtures must pass.
    """
    sync(session, "--only-group", "build")
    dist = Path("dist")
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    artifacts = sorted(str(p) for p in dist.iterdir())
    session.run("twine", "check", "--strict", *artifacts)
    (wheel,) = dist.glob("*.whl")
    session.run("check-wheel-contents", str(wheel))
    with tempfile.TemporaryDirectory(prefix="entur-oauth-wheel-") as tmp:
        where = Path(tmp)
        pins = where / "pins.txt"
        session.run(
            *(uv(), "export", "--locked", "--quiet", "--no-emit-project", "--no-hashes"),
            *("--group", "test", "--output-file", str(pins)),
            external=True,
        )
        venv = where / "venv"
        python_request = str(session.python)
        session.run(uv(), "venv", "--quiet", "--python", python_request, str(venv), external=True)
        bin_dir = venv / ("Scripts" if sys.platform == "win32" else "bin")
        python = str(bin_dir / "python")
        session.run(
            *(uv(), "pip", "install", "--quiet", "--python", python),
            *("--constraint", str(pins), str(wheel.resolve()), "pytest"),
            external=True,
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
