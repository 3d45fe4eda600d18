"""Every example runs, as a user runs it (a subprocess reading ENTUR_* variables), against
the fake Entur on a loopback port; the FastAPI one as a real uvicorn server process."""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest

from entur_oauth.testing import FakeEntur

from .conftest import NO_NETWORK

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: Every example runs as a subprocess.
pytestmark = pytest.mark.slow


@pytest.fixture
def served() -> Iterator[tuple[FakeEntur, dict[str, str]]]:
    """A fake Entur with sample open-API answers on loopback, and the environment for a
    subprocess pointed at it."""
    fake = FakeEntur(samples=True)
    with fake.serve() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENTUR_")}
        env.update(NO_NETWORK)
        env.update(fake.env(url, client_name="acme-examples"))
        yield fake, env


def run_example(
    name: str, *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/NAME ARGS`` with the test interpreter, with warnings as errors."""
    return subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_instructions(name: str) -> list[list[str]]:
    """The commands an example's docstring tells a user to run (python or uvicorn lines)."""
    docstring = ast.get_docstring(ast.parse((EXAMPLES / name).read_text())) or ""
    commands = []
    for line in docstring.splitlines():
        text = line.partition("  #")[0].strip()
        if text.startswith(("python ", "uvicorn ")):
            commands.append(shlex.split(text))
    return commands


def copied(name: str, where: Path) -> Path:
    """Copy ``examples/NAME`` alone into a new folder, as a user starting a project would."""
    folder = where / "project"
    folder.mkdir(exist_ok=True)
    target = folder / name
    shutil.copy(EXAMPLES / name, target)
    return target


SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if p.name != "fastapi_backend.py")
OPEN_API = {"geocoder.py", "journey_planner.py"}


@pytest.mark.parametrize("name", SCRIPTS)
def test_run_instructions_work_from_a_copy_of_the_example(
    served: tuple[FakeEntur, dict[str, str]], tmp_path: Path, name: str
) -> None:
    """Each example's docstring command, run in a folder holding only a copy of the file,
    exits 0 against the fake (no 'examples/' path in the instructions)."""
    _, env = served
    commands = run_instructions(name)
    assert commands, f"{name}: no 'python {name} ...' line in the docstring"
    copy = copied(name, tmp_path)
    for command in commands:
        assert command[:2] == ["python", name], command
        result = subprocess.run(
            [sys.executable, "-W", "error", *command[1:]],
            cwd=copy.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{name}: {command}\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("name", [*SCRIPTS, "fastapi_backend.py"])
def test_without_settings_each_example_says_one_line(tmp_path: Path, name: str) -> None:
    """With no ENTUR_* variables an example exits non-zero with one line on stderr: no
    traceback, no private module path; the open-API ones ask only for ENTUR_CLIENT_NAME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTUR_")}
    env.update(NO_NETWORK)
    copy = copied(name, tmp_path)
    if name == "fastapi_backend.py":
        pytest.importorskip("fastapi")
        command = [sys.executable, "-m", "uvicorn", "fastapi_backend:app", "--port", "0"]
    else:
        command = [sys.executable, "-W", "error", name]
    result = subprocess.run(
        command, cwd=copy.parent, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{name}: ")
    assert "ENTUR_CLIENT_NAME" in lines[0]
    assert "entur_oauth._" not in lines[0]
    if name in OPEN_API:
        assert "ENTUR_CLIENT_ID" not in lines[0]
        assert "ENTUR_CLIENT_SECRET" not in lines[0]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_each_example_says_what_it_shows_and_how_to_run_it(path: Path) -> None:
    """Every example starts with a docstring that says how to run it against Entur."""
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring, f"{path.name} has no module docstring"
    assert re.search(r"(?i)\brun\b", docstring), f"{path.name}: say how to run it"
    assert "ENTUR_CLIENT_NAME" in docstring, f"{path.name}: say which ENTUR_* variables to set"


def test_asyncio_basic(served: tuple[FakeEntur, dict[str, str]]) -> None:
    """The asyncio quick start makes one authenticated call."""
    fake, env = served
    result = run_example("asyncio_basic.py", env=env)
    assert result.returncode == 0, result.stderr
    assert "'authenticated': True" in result.stdout
    assert "/personalisation/v1/programs/1" in result.stdout
    assert fake.token_count == 1
    assert result.stderr == ""


def test_trio_basic(served: tuple[FakeEntur, dict[str, str]]) -> None:
    """The trio program makes concurrent calls on one token."""
    fake, env = served
    result = run_example("trio_basic.py", "/sales/v1/x", env=env)
    assert result.returncode == 0, result.stderr
    assert "statuses: [200, 200, 200]" in result.stdout
    assert "'path': '/sales/v1/x'" in result.stdout
    assert fake.token_count == 1
    assert len(fake.api_requests) == 4


def test_sync_script_shares_one_token_across_asyncio_runs(
    served: tuple[FakeEntur, dict[str, str]],
) -> None:
    """Two calls from synchronous code, each in its own asyncio.run with a new client, make
    one token request between them: the default (per-process) store shares the token."""
    fake, env = served
    result = run_example("sync_script.py", "/sales/v1/x", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[0].startswith("call 1: {")
    assert lines[0].endswith("tokens fetched by this call: 1")
    assert lines[1].endswith("tokens fetched by this call: 0")
    assert all("'path': '/sales/v1/x'" in line for line in lines)
    assert fake.token_count == 1
    assert len(fake.api_requests) == 2
    assert len({r.headers["authorization"] for r in fake.api_requests}) == 1


def test_journey_planner(served: tuple[FakeEntur, dict[str, str]]) -> None:
    """The open-API trip query sends GraphQL with ET-Client-Name and no token."""
    fake, env = served
    result = run_example("journey_planner.py", env=env)
    assert result.returncode == 0, result.stderr
    assert "6 h 55 min  rail F4 Oslo S -> Bergen stasjon" in result.stdout
    assert fake.token_count == 0
    (call,) = fake.api_requests
    assert call.path == "/journey-planner/v3/graphql"
    assert call.headers["et-client-name"] == "acme-examples"
    assert "authorization" not in call.headers
    body = call.json()
    assert "tripPatterns" in body["query"]
    assert body["variables"] == {
        "from": {"place": "NSR:StopPlace:59872"},
        "to": {"place": "NSR:StopPlace:548"},
    }


def test_geocoder(served: tuple[FakeEntur, dict[str, str]]) -> None:
    """The open-API autocomplete finds a stop by name, without a token."""
    fake, env = served
    result = run_example("geocoder.py", "Oslo", env=env)
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"NSR:StopPlace:59872 +Oslo S, Oslo +\(59\.9109\d, 10\.7532\d\)", result.stdout
    )
    (call,) = fake.api_requests
    assert call.params == {"text": "Oslo", "size": "5", "lang": "no"}
    assert "authorization" not in call.headers
    assert fake.token_count == 0
    nothing = run_example("geocoder.py", "Atlantis", env=env)
    assert "nothing found for 'Atlantis'" in nothing.stdout


def test_partner_api_sends_the_partner_headers(served: tuple[FakeEntur, dict[str, str]]) -> None:
    """Entur-POS and Entur-Distribution-Channel on the client, X-Correlation-Id per call."""
    fake, env = served
    env = {
        **env,
        "ENTUR_POS": "acme-kiosk",
        "ENTUR_DISTRIBUTION_CHANNEL": "ENT:DistributionChannel:App",
    }
    result = run_example("partner_api.py", "/sales/v1/offers", env=env)
    assert result.returncode == 0, result.stderr
    match = re.search(r"HTTP 200 \(X-Correlation-Id: ([0-9a-f-]{36})\)", result.stdout)
    assert match
    (call,) = fake.api_requests
    assert call.headers["entur-pos"] == "acme-kiosk"
    assert call.headers["entur-distribution-channel"] == "ENT:DistributionChannel:App"
    assert call.headers["x-correlation-id"] == match.group(1)
    assert call.headers["authorization"].startswith("Bearer ")
    assert call.headers["et-client-name"] == "acme-examples"


def test_partner_api_reports_a_403(served: tuple[FakeEntur, dict[str, str]]) -> None:
    """A forbidden endpoint exits 1 with the ForbiddenError's advice."""
    _, env = served
    result = run_example("partner_api.py", "/forbidden/sales", env=env)
    assert result.returncode == 1
    assert "403: Entur answered 403 Forbidden" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if httpx2.get(url, trust_env=False).status_code == 200:
                return
        except httpx2.TransportError:
            time.sleep(0.05)
    raise AssertionError("the FastAPI example did not start")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a subprocess")
def test_fastapi_backend_shares_one_client(
    served: tuple[FakeEntur, dict[str, str]], tmp_path: Path
) -> None:
    """A real uvicorn process serves the example: endpoints share the lifespan's client (one
    token for all calls), Entur's API errors become 502, token errors a generic 503 whose
    detail (token URL, settings) only the back end's log shows, and shutdown closes the
    client. It runs from a copy of the file elsewhere, with the docstring's command."""
    pytest.importorskip("fastapi")
    fake, env = served
    port = _free_port()
    # The docstring's command, run where a user who copied the file would run it.
    (command,) = run_instructions("fastapi_backend.py")
    assert command == ["uvicorn", "fastapi_backend:app", "--port", "8000"]
    copy = copied("fastapi_backend.py", tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", *command[:-1], str(port)],
        cwd=copy.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{base}/health", process)
        with httpx2.Client(base_url=base, trust_env=False) as http:
            with ThreadPoolExecutor(8) as pool:
                answers = list(
                    pool.map(lambda _: http.get("/entur/personalisation/v1/programs/1"), range(16))
                )
            assert {a.status_code for a in answers} == {200}
            assert answers[0].json()["authenticated"] is True
            stops = http.get("/stops", params={"text": "trondheim"})
            assert stops.json() == [
                {"id": "NSR:StopPlace:41742", "label": "Trondheim S, Trondheim"}
            ]
            forbidden = http.get("/entur/forbidden/x")
            assert (forbidden.status_code, forbidden.json()) == (
                502,
                {"detail": "Entur answered 403"},
            )
            fake.revoke_all()
            fake.fail_token(503, times=3)
            unavailable = http.get("/entur/personalisation/v1/programs/1")
            fake.fail_token(401)  # InvalidCredentialsError: its message names our settings
            rejected = http.get("/entur/personalisation/v1/programs/1")
            for answer in (unavailable, rejected):
                assert (answer.status_code, answer.json()) == (
                    503,
                    {"detail": "Entur is unavailable; try again later"},
                )
        assert fake.token_count == 5  # 1 shared by 18 calls, 3 failed attempts, 1 rejected
        assert {r.headers["et-client-name"] for r in fake.api_requests} == {"acme-examples"}
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    # What the callers were not told is in the back end's own log: both errors, in full.
    assert stderr.count("Entur authentication failed") == 2, stderr
    logged = re.findall(r"(?m)^\S*(TokenRequestError|InvalidCredentialsError): (.*)$", stderr)
    assert [kind for kind, _ in logged] == ["TokenRequestError", "InvalidCredentialsError"]
    assert all("/oauth/token" in message for _, message in logged)
    assert "ENTUR_CLIENT_ID" in logged[1][1]
    assert stderr.index("Waiting for application shutdown") < stderr.index("EnturClient closed")
    assert "Application shutdown complete" in stderr
    assert fake.client_secret not in stderr


def test_many_workers_share_one_token(served: tuple[FakeEntur, dict[str, str]]) -> None:
    """Six worker processes with one FileTokenStore make one token request between them."""
    fake, env = served
    result = run_example("many_workers.py", "6", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    *lines, total = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"worker {n}" for n in range(6)]
    assert all("HTTP 200" in line for line in lines), result.stdout
    assert sum(int(line.rsplit(": ", 1)[1]) for line in lines) == 1
    assert total == "token requests by all 6 workers: 1"
    assert fake.token_count == 1


def test_many_workers_without_settings_says_what_is_missing_once() -> None:
    """Without ENTUR_* variables the parent stops with one clear message, before any worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTUR_")}
    env.update(NO_NETWORK)
    result = run_example("many_workers.py", "3", env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.count("Missing environment variable(s): ENTUR_CLIENT_ID") == 1
