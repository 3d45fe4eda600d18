"""The users' test kit: entur_oauth.testing and its pytest fixtures, used the way a user
would (the fixtures come from the installed ``pytest11`` plugin, not from our conftest)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import httpx2
import pytest

from entur_oauth import EnturClient, ForbiddenError, RetryPolicy, SessionTimeoutError
from entur_oauth.testing import FakeClock, FakeEntur, RecordedRequest, ScriptedResponse

pytestmark = pytest.mark.anyio


# -- the fixtures, in-process ------------------------------------------------------------


async def test_entur_client_shares_one_token_and_records_headers(
    entur_fake: FakeEntur, entur_client: EnturClient
) -> None:
    """entur_client is ready to use; the fake counts token requests and records headers."""
    async with entur_client, anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(entur_client.get, "/x")
    assert entur_fake.token_count == 1
    assert len(entur_fake.api_requests) == 20
    headers = entur_fake.api_requests[0].headers
    assert headers["et-client-name"] == "test-app"
    assert headers["authorization"] == f"Bearer {entur_fake.issued_tokens[0]}"


async def test_entur_clock_expires_tokens_without_sleeping(
    entur_fake: FakeEntur, entur_client: EnturClient, entur_clock: FakeClock
) -> None:
    """Advancing the shared clock past expiry makes the client fetch anew, instantly."""
    started = time.monotonic()
    async with entur_client:
        await entur_client.get("/x")
        entur_clock.advance(86400)
        assert (await entur_client.get("/x")).status_code == 200
    assert entur_fake.token_count == 2
    assert time.monotonic() - started < 5


async def test_retry_after_on_the_token_endpoint_passes_on_the_fake_clock(
    entur_fake: FakeEntur, entur_client: EnturClient
) -> None:
    """A 429 with Retry-After: 20 is honoured by the client, on the autojumping clock."""
    entur_fake.fail_token(429, retry_after=20)
    started = time.monotonic()
    async with entur_client:
        assert (await entur_client.get("/x")).status_code == 200
    assert entur_fake.token_count == 2
    assert time.monotonic() - started < 5  # 20 s of fake time, not of real time


async def test_scripted_api_failures(entur_fake: FakeEntur, entur_client: EnturClient) -> None:
    """fail_api scripts any status with headers; 403 maps to ForbiddenError; 408 twice maps
    to SessionTimeoutError; then the fake answers normally again."""
    entur_fake.fail_api(429, retry_after=3)
    entur_fake.fail_api(ScriptedResponse(403, json={"message": "no"}))
    entur_fake.fail_api(408, times=2)
    async with entur_client:
        limited = await entur_client.get("/x")
        assert (limited.status_code, limited.headers["retry-after"]) == (429, "3")
        with pytest.raises(ForbiddenError):
            await entur_client.get("/x")
        with pytest.raises(SessionTimeoutError):
            await entur_client.get("/x")
        assert (await entur_client.get("/x")).status_code == 200


async def test_wrong_secret_is_rejected_like_entur(entur_fake: FakeEntur) -> None:
    """A client with a wrong secret gets the credentials error Entur gives."""
    from entur_oauth import InvalidCredentialsError

    async with entur_fake.client(client_secret="wrong") as client:
        with pytest.raises(InvalidCredentialsError):
            await client.get("/x")


async def test_route_gives_canned_answers(entur_fake: FakeEntur, entur_client: EnturClient) -> None:
    """route() answers a path with fixed JSON, per method, or from a function of the request;
    the API's token check still applies first."""
    entur_fake.route("/sales/v1/offers", json={"offers": [1]})
    entur_fake.route("/sales/v1/orders", status=201, json={"id": "o1"}, method="POST")

    def echo(request: RecordedRequest) -> ScriptedResponse:
        return ScriptedResponse(200, json={"q": request.params.get("q")})

    entur_fake.route("/echo", echo)
    async with entur_client:
        assert (await entur_client.get("/sales/v1/offers")).json() == {"offers": [1]}
        created = await entur_client.post("/sales/v1/orders", json={})
        assert (created.status_code, created.json()) == (201, {"id": "o1"})
        other_method = await entur_client.get("/sales/v1/orders")
        assert other_method.json()["path"] == "/sales/v1/orders"  # the default echo
        assert (await entur_client.get("/echo", params={"q": "a b"})).json() == {"q": "a b"}
        entur_fake.revoke_all()
        entur_fake.fail_api(401, times=2)
        with pytest.raises(Exception, match="401"):
            await entur_client.get("/sales/v1/offers")


async def test_samples_answer_like_the_open_apis() -> None:
    """FakeEntur(samples=True) answers Journey Planner and the geocoder with Entur's shapes."""
    fake = FakeEntur(samples=True)
    async with fake.client(credentials=False) as client:
        trip = await client.post("/journey-planner/v3/graphql", json={"query": "{ trip }"})
        stops = await client.get("/geocoder/v1/autocomplete", params={"text": "bergen"})
        bad = await client.post("/journey-planner/v3/graphql", json={"no": "query"})
    assert trip.json()["data"]["trip"]["tripPatterns"][0]["legs"][0]["mode"] == "rail"
    assert [f["properties"]["name"] for f in stops.json()["features"]] == ["Bergen stasjon"]
    assert bad.status_code == 400
    assert fake.token_count == 0


async def test_reset_forgets_requests_and_scripts(
    entur_fake: FakeEntur, entur_client: EnturClient
) -> None:
    """reset() clears what was recorded and scripted; issued tokens keep working."""
    async with entur_client:
        await entur_client.get("/x")
        entur_fake.fail_api(500)
        entur_fake.reset()
        assert (await entur_client.get("/x")).status_code == 200
    assert entur_fake.token_count == 0
    assert len(entur_fake.api_requests) == 1


async def test_fakes_never_share_tokens_through_the_process_store() -> None:
    """Two fakes have different default secrets, so a second fake's client does not pick up
    the first fake's token from the process-wide store (no 401, one fetch of its own)."""
    first, second = FakeEntur(), FakeEntur()
    assert first.client_secret != second.client_secret
    assert FakeEntur(client_secret="s").client_secret == "s"
    async with first.client() as client:
        await client.get("/x")
    async with second.client() as client:
        assert (await client.get("/x")).status_code == 200
    assert second.token_count == 1
    assert len(second.api_requests) == 1  # no 401 and retry


# -- on a loopback port --------------------------------------------------------------------


async def test_entur_env_points_from_env_at_the_fake(
    entur_fake: FakeEntur, entur_env: dict[str, str], entur_fake_url: str
) -> None:
    """With entur_env, EnturClient.from_env() talks to the fake over a real socket."""
    assert os.environ["ENTUR_API_BASE_URL"] == entur_fake_url == entur_fake.url
    assert entur_env["ENTUR_CLIENT_SECRET"] == entur_fake.client_secret
    async with EnturClient.from_env() as client:
        response = await client.get("/x")
    assert response.json() == {"path": "/x", "client_name": "test-app", "authenticated": True}
    assert entur_fake.token_count == 1


async def test_slow_and_hanging_answers_meet_the_client_timeout(
    entur_fake: FakeEntur, entur_fake_url: str
) -> None:
    """delay_api makes a slow answer, a hang never answers: both end in the client's
    timeout over a real socket, and the fake serves the next call normally."""
    # The delay is far past the timeout and the timeout far past a normal loopback answer,
    # so a loaded CI machine changes neither outcome; a delay ends when the client leaves.
    entur_fake.delay_api(10.0)
    entur_fake.fail_api(ScriptedResponse(hang=True))
    async with EnturClient(
        entur_fake.client_id,
        entur_fake.client_secret,
        client_name="test-app",
        environment=entur_fake.environment(entur_fake_url),
        timeout=1.0,
    ) as client:
        for _ in range(2):
            with pytest.raises(httpx2.ReadTimeout):
                await client.get("/slow")
        assert (await client.get("/x")).status_code == 200


async def test_delay_token_slows_the_token_endpoint(
    entur_fake: FakeEntur, entur_fake_url: str
) -> None:
    """delay_token slows the token endpoint; the client's token timeout then retries."""
    entur_fake.delay_token(10.0)
    async with EnturClient(
        entur_fake.client_id,
        entur_fake.client_secret,
        client_name="test-app",
        environment=entur_fake.environment(entur_fake_url),
        retry=RetryPolicy(timeout=1.0, backoff_base=0.01),
    ) as client:
        assert (await client.get("/x")).status_code == 200
    assert entur_fake.token_count == 2


async def test_in_process_delays_run_on_the_fake_clock(
    entur_fake: FakeEntur, entur_client: EnturClient, entur_clock: FakeClock
) -> None:
    """In-process, delay_token and delay_api wait on the fake's clock (the fixtures' one
    jumps): a 5 s token delay and a 10 s API delay pass with no real waiting, the clock
    moving by them; an hour-long token delay passes the request's cut-off (16 s of the
    clock), so the client retries, as it would against a slow Entur."""
    entur_fake.delay_token(5.0)
    entur_fake.delay_api(10.0)
    with anyio.fail_after(3):  # a real-time delay would take 15 s
        async with entur_client:
            assert (await entur_client.get("/x")).status_code == 200
            assert entur_clock.monotonic() >= 15.0
            assert entur_fake.token_count == 1
            entur_fake.delay_token(3600.0)
            await entur_client.fetch_token()
    assert entur_fake.token_count == 3  # the hour-long one was cut off and retried
    assert entur_clock.monotonic() < 3600.0 + 15.0  # cut at 16 s, not waited out


@pytest.mark.slow
def test_a_served_fake_delays_in_real_time() -> None:
    """Served on a port, the fake runs in another thread's event loop, where the test's
    FakeClock cannot wake it: its delays are real time (the request waits for them)."""
    clock = FakeClock()  # nobody moves it: on it, the delay would never end
    fake = FakeEntur(clock=clock)
    fake.delay_api(0.2)
    with fake.serve(server="builtin") as url, httpx2.Client(base_url=url, timeout=10) as http:
        response = http.get("/geocoder/v1/x", headers={"ET-Client-Name": "test-app"})
    assert response.status_code == 200
    assert clock.monotonic() == 0.0


@pytest.mark.parametrize("server", ["uvicorn", "builtin"])
@pytest.mark.slow
def test_serve_works_with_either_server(server: str) -> None:
    """serve() runs the fake on loopback with uvicorn or the built-in server alike, and
    stops it on exit."""
    fake = FakeEntur()
    with fake.serve(server=server) as url:  # type: ignore[arg-type]
        assert fake.url == url
        with httpx2.Client(base_url=url) as http:
            token = http.post(
                "/oauth/token",
                json={
                    "client_id": fake.client_id,
                    "client_secret": fake.client_secret,
                    "audience": fake.audience,
                    "grant_type": "client_credentials",
                },
            ).json()["access_token"]
            answer = http.get(
                "/x", headers={"Authorization": f"Bearer {token}", "ET-Client-Name": "a-b"}
            )
        assert answer.json()["authenticated"] is True
    after: str | None = fake.url  # (a fresh read: mypy narrowed fake.url above)
    assert after is None
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(url + "/x")


def test_serve_refuses_other_hosts_and_unknown_servers() -> None:
    """The fake listens on loopback only; a server name is checked."""
    with pytest.raises(ValueError, match="loopback"), FakeEntur().serve(host="0.0.0.0"):
        pass
    with pytest.raises(ValueError, match="server"), FakeEntur().serve(server="gunicorn"):  # type: ignore[arg-type]
        pass


def test_env_needs_a_url() -> None:
    """env() says how to get a URL when the fake is not served."""
    with pytest.raises(RuntimeError, match="serve"):
        FakeEntur().env()
    variables = FakeEntur().env("http://127.0.0.1:1", credentials=False)
    assert "ENTUR_CLIENT_SECRET" not in variables
    assert variables["ENTUR_TOKEN_URL"] == "http://127.0.0.1:1/oauth/token"


def _raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.slow
def test_builtin_server_speaks_enough_http() -> None:
    """The built-in server handles chunked bodies, Expect: 100-continue, HTTP/1.0 and
    refuses malformed requests with 400."""
    fake = FakeEntur()
    fake.route("/echo", lambda r: ScriptedResponse(200, json={"body": r.body.decode()}))
    with fake.serve(server="builtin") as url:
        chunked = _raw(
            url,
            b"POST /x HTTP/1.1\r\nHost: x\r\nET-Client-Name: a-b\r\n"
            b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
            b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
        )
        assert chunked.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 Unauthorized")
        open_path = _raw(url, b"GET /geocoder/v1/x HTTP/1.0\r\nET-Client-Name: a-b\r\n\r\n")
        assert open_path.startswith(b"HTTP/1.1 200 OK")
        assert b"connection: close" in open_path
        assert _raw(url, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request")
    assert fake.api_requests[0].body == b"abcde"


@pytest.mark.slow
def test_builtin_server_passes_bodies_to_the_app() -> None:
    """A chunked request body reaches the app whole."""
    fake = FakeEntur(open_paths=("/echo",))
    fake.route("/echo", lambda r: ScriptedResponse(200, json={"body": r.body.decode()}))
    with fake.serve(server="builtin") as url:
        answer = _raw(
            url,
            b"POST /echo HTTP/1.1\r\nET-Client-Name: a-b\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
    assert answer.endswith(b'{"body": "abcde"}')


# -- the plugin, as a user's pytest run sees it -------------------------------------------

USER_TESTS = """
import anyio
import pytest
from entur_oauth import EnturClient, ForbiddenError

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def test_one_fetch_for_concurrent_calls(entur_fake, entur_client):
    async with entur_client, anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(entur_client.get, "/x")
    assert entur_fake.token_count == 1


async def test_refetch_after_expiry(entur_fake, entur_client, entur_clock):
    async with entur_client:
        await entur_client.get("/x")
        entur_clock.advance(86400)
        await entur_client.get("/x")
    assert entur_fake.token_count == 2


async def test_forbidden(entur_client):
    with pytest.raises(ForbiddenError):
        await entur_client.get("/forbidden/x")


async def test_from_env(entur_env, entur_fake):
    async with EnturClient.from_env() as client:
        assert (await client.get("/x")).status_code == 200
    assert entur_fake.token_count == 1


def test_sync_code_sees_the_url(entur_fake_url, entur_fake):
    assert entur_fake.url == entur_fake_url


async def test_expected_failure(entur_fake, entur_client):
    await entur_client.get("/x")
    assert entur_fake.token_count == 2, "the kit must be able to fail a user's test"
"""


def _user_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    # A project that has pytest-asyncio installed too (the test group does) sets its loop
    # scope, as pytest-asyncio asks; our fixtures run beside it in its strict mode.
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nfilterwarnings = error\nasyncio_default_fixture_loop_scope = function\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENTUR_", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_plugin_fixtures_work_in_a_users_pytest_run(tmp_path: Path) -> None:
    """In a project of its own (no conftest of ours), the fixtures are there through the
    entry point and work on asyncio and trio; a wrong expectation fails."""
    result = _user_pytest(tmp_path, "-q")
    assert "9 passed" in result.stdout, result.stdout + result.stderr
    assert "2 failed" in result.stdout
    assert "the kit must be able to fail a user's test" in result.stdout
    assert result.returncode == 1


@pytest.mark.slow
def test_plugin_documents_its_fixtures(tmp_path: Path) -> None:
    """pytest --fixtures lists each fixture with its docstring."""
    result = _user_pytest(tmp_path, "--fixtures", "-q")
    for name in ("entur_clock", "entur_fake", "entur_client", "entur_fake_url", "entur_env"):
        assert f"{name} -- " in result.stdout or f"\n{name}\n" in result.stdout, name
    assert "a real loopback port" in result.stdout


@pytest.mark.slow
def test_loading_the_plugin_imports_nothing_heavy(tmp_path: Path) -> None:
    """Every pytest run where entur-oauth is installed loads the plugin: loading it (and the
    entur_oauth package) imports no httpx2, authlib, anyio or cryptography; a fixture's
    first use does."""
    code = textwrap.dedent(
        """
        import sys
        import entur_oauth._pytest_plugin as plugin
        heavy = ("httpx2", "authlib", "anyio", "cryptography")
        print(sorted({m.split(".")[0] for m in sys.modules} & set(heavy)))
        plugin.entur_fake.__wrapped__(plugin.entur_clock.__wrapped__())
        print(sorted({m.split(".")[0] for m in sys.modules} & set(heavy)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded, used = result.stdout.splitlines()
    assert loaded == "[]"
    assert "httpx2" in used
    assert "anyio" in used


@pytest.mark.slow
def test_a_users_pytest_run_that_uses_no_fixture_loads_nothing_heavy(tmp_path: Path) -> None:
    """In a real pytest run of a project that never uses the fixtures, the plugin is loaded
    and neither httpx2, authlib nor cryptography is (anyio's own plugin is turned off, as it
    imports anyio itself)."""
    (tmp_path / "test_plain.py").write_text(
        textwrap.dedent(
            """
            import sys

            def test_nothing_heavy():
                assert "entur_oauth._pytest_plugin" in sys.modules
                heavy = {"httpx2", "authlib", "cryptography", "anyio"}
                assert not heavy & {name.split(".")[0] for name in sys.modules}
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENTUR_", "PYTEST_"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:anyio"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
