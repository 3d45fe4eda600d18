"""EnturClient behaviour (issue 2), in-process against the fake Entur, on asyncio and trio."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Generator

import anyio
import httpx2
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client

from entur_oauth import (
    APIError,
    ConfigurationError,
    EnturClient,
    Environment,
    ForbiddenError,
    InvalidCredentialsError,
    RefreshPolicy,
    RetryPolicy,
    Secret,
    SessionTimeoutError,
    TokenRequestError,
    UnauthorizedError,
)
from entur_oauth.testing import FakeClock, FakeEntur, ScriptedResponse

pytestmark = pytest.mark.anyio

NO_RETRY = RetryPolicy(attempts=1)


def test_is_an_authlib_and_httpx2_client(fake: FakeEntur) -> None:
    """EnturClient is authlib's AsyncOAuth2Client, hence an httpx2.AsyncClient."""
    client = fake.client()
    assert isinstance(client, AsyncOAuth2Client)
    assert isinstance(client, httpx2.AsyncClient)


async def test_token_request_is_entur_json_body(fake: FakeEntur) -> None:
    """POST to the token URL with exactly the JSON body Entur documents."""
    async with fake.client() as client:
        await client.get("/x")
    (request,) = fake.token_requests
    assert request.method == "POST"
    assert request.path == "/oauth/token"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "audience": fake.audience,
        "grant_type": "client_credentials",
    }
    assert "authorization" not in request.headers  # the secret goes in the body only


async def test_refetch_after_expiry_still_sends_audience(fake: FakeEntur) -> None:
    """The automatic re-fetch keeps audience (authlib drops it: authlib#783)."""
    clock = FakeClock()
    fake.clock = clock
    async with fake.client(clock=clock) as client:
        await client.get("/x")
        clock.advance(86400)
        response = await client.get("/x")
    assert response.status_code == 200
    assert fake.token_count == 2
    assert [r.json()["audience"] for r in fake.token_requests] == [fake.audience] * 2


async def test_refetch_after_401_still_sends_audience(fake: FakeEntur) -> None:
    """The re-fetch forced by an API 401 carries the same JSON body."""
    async with fake.client() as client:
        await client.get("/x")
        fake.revoke_all()
        response = await client.get("/x")
    assert response.status_code == 200
    assert fake.token_requests[0].json() == fake.token_requests[1].json()


async def test_client_name_on_every_request(fake: FakeEntur) -> None:
    """ET-Client-Name goes on the token request and on every API call."""
    async with fake.client(client_name="acme-app") as client:
        await client.get("/a")
        await client.post("/b", json={"k": 1})
    names = [r.headers.get("et-client-name") for r in fake.token_requests + fake.api_requests]
    assert names == ["acme-app"] * 3


async def test_user_headers_are_kept(fake: FakeEntur) -> None:
    """Headers passed to the client merge with ET-Client-Name."""
    async with fake.client(headers={"X-Correlation-Id": "abc"}) as client:
        await client.get("/x")
    assert fake.api_requests[0].headers["x-correlation-id"] == "abc"
    assert fake.api_requests[0].headers["et-client-name"] == "test-app"


async def test_no_network_call_until_first_use(fake: FakeEntur) -> None:
    """Creating and opening a client fetches nothing: the token is lazy."""
    async with fake.client():
        pass
    assert fake.token_count == 0


async def test_token_is_reused(fake: FakeEntur) -> None:
    """Many sequential calls share one token."""
    async with fake.client() as client:
        for _ in range(20):
            assert (await client.get("/x")).status_code == 200
    assert fake.token_count == 1
    tokens = {r.headers["authorization"] for r in fake.api_requests}
    assert len(tokens) == 1


async def test_200_concurrent_first_requests_make_one_token_request(fake: FakeEntur) -> None:
    """Concurrent first requests share one fetch."""
    statuses: list[int] = []
    async with fake.client() as client:

        async def call() -> None:
            statuses.append((await client.get("/x")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(call)
    assert statuses == [200] * 200
    assert fake.token_count == 1


async def test_expiry_under_load_makes_one_token_request(fake: FakeEntur) -> None:
    """When the token expires, 200 concurrent requests share one re-fetch."""
    clock = FakeClock()
    fake.clock = clock
    async with fake.client(clock=clock) as client:
        await client.get("/x")
        clock.advance(86400 + 1)
        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(client.get, "/x")
    assert fake.token_count == 2


async def test_waiters_share_one_failure(fake: FakeEntur) -> None:
    """50 tasks waiting on a failing fetch all get its error; the endpoint is asked once."""
    fake.fail_token(ScriptedResponse(status=500, delay=0.05), times=10)
    errors: list[BaseException] = []
    async with fake.client(retry=NO_RETRY) as client:

        async def call() -> None:
            try:
                await client.get("/x")
            except TokenRequestError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(call)
    assert fake.token_count == 1
    assert len(errors) == 50
    # Each waiter raises its own copy (one exception object raised in 50 tasks would
    # collect 50 tracebacks), but it is the same failure.
    assert len({(type(e), str(e)) for e in errors}) == 1
    assert {e.status_code for e in errors} == {500}  # type: ignore[attr-defined]


async def test_get_access_token(fake: FakeEntur) -> None:
    """get_access_token returns the cached token for other libraries."""
    async with fake.client() as client:
        token = await client.get_access_token()
        assert token == await client.get_access_token()
    assert fake.issued_tokens == [token]
    assert fake.token_count == 1


async def test_get_access_token_on_open_client_says_what_to_do(fake: FakeEntur) -> None:
    """An open-API client has no token and says how to get one."""
    async with fake.client(credentials=False) as client:
        with pytest.raises(ConfigurationError, match="client_id/client_secret"):
            await client.get_access_token()


async def test_open_api_client_never_asks_for_a_token(fake: FakeEntur) -> None:
    """Without credentials: ET-Client-Name, no Authorization, no token request."""
    async with fake.client(credentials=False) as client:
        response = await client.get("/geocoder/v1/autocomplete", params={"text": "Oslo"})
    assert response.json()["authenticated"] is False
    assert fake.token_count == 0
    assert "authorization" not in fake.api_requests[0].headers
    assert fake.api_requests[0].headers["et-client-name"] == "test-app"


# -- bearer scoping -------------------------------------------------------------------------


def _recording_transport(fake: FakeEntur, seen: list[httpx2.Request]) -> httpx2.AsyncBaseTransport:
    inner = fake.transport()

    class Recording(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            # A snapshot: the client takes the bearer off the request once it is answered.
            snapshot = copy.copy(request)
            snapshot.headers = request.headers.copy()
            seen.append(snapshot)
            if request.url.host in {"api.entur.test", "partner.entur.test", "extra.entur.test"}:
                return await inner.handle_async_request(request)
            return httpx2.Response(200, json={"elsewhere": True})

    return Recording()


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/x",
        "http://api.entur.test/x",  # same host, plain http
        "https://api.entur.test:8443/x",  # same host, another port
        "https://evil.api.entur.test/x",
        "https://api.entur.test.evil.org/x",
    ],
)
async def test_token_only_goes_to_the_api_host(fake: FakeEntur, url: str) -> None:
    """Requests to any other origin go out without Authorization."""
    seen: list[httpx2.Request] = []
    async with fake.client(transport=_recording_transport(fake, seen)) as client:
        await client.get("/x")
        await client.get(url)
    api, other = [r for r in seen if r.url.path == "/x"]
    assert api.headers["authorization"].startswith("Bearer ")
    assert "authorization" not in other.headers
    assert other.headers["et-client-name"] == "test-app"


async def test_extra_token_hosts_get_the_token(fake: FakeEntur) -> None:
    """Hosts the user adds explicitly receive the bearer too."""
    env = Environment(
        name="fake",
        token_url="https://partner.entur.test/oauth/token",
        audience=fake.audience,
        api_base_url="https://api.entur.test",
        extra_token_hosts=frozenset({"extra.entur.test"}),
    )
    seen: list[httpx2.Request] = []
    async with fake.client(environment=env, transport=_recording_transport(fake, seen)) as client:
        await client.get("https://extra.entur.test/y")
    assert seen[-1].headers["authorization"].startswith("Bearer ")


async def test_idna_ipv6_and_port_hosts_get_the_token_by_origin(fake: FakeEntur) -> None:
    """The token goes by (scheme, host, port) as httpx2 normalises them: a Unicode host
    and its punycode spelling, any letter case, an IPv6 literal with its port, all get it;
    the same host on another port or scheme, or a look-alike host, does not."""
    env = Environment(
        name="fake",
        token_url="https://partner.entur.test/oauth/token",
        audience=fake.audience,
        api_base_url="https://api.entur.test",
        extra_token_hosts=frozenset({"bl\u00e5b\u00e6r.example", "[::1]:8443"}),
    )
    seen: list[httpx2.Request] = []
    urls = {
        "https://bl\u00e5b\u00e6r.example/a": True,
        "https://xn--blbr-roah.example/b": True,
        "https://BL\u00c5B\u00c6R.Example:443/c": True,
        "https://[::1]:8443/d": True,
        "https://bl\u00e5b\u00e6r.example:8443/e": False,
        "https://[::1]/f": False,
        "https://blabaer.example/g": False,
        "https://api.entur.test.evil.example/h": False,
    }
    async with fake.client(environment=env, transport=_recording_transport(fake, seen)) as client:
        for url in urls:
            await client.get(url)
    api = [r for r in seen if r.url.path != "/oauth/token"]
    got = {r.url.path: "authorization" in r.headers for r in api}
    assert got == {httpx2.URL(url).path: expected for url, expected in urls.items()}


_ENTUR_IO_ORIGIN = {
    "https://api.entur.io/x": True,
    "https://API.Entur.IO:443/x?q=1": True,
    "https://user:pw@api.entur.io/x": True,
    "https://api.entur.io:8443/": False,
    "http://api.entur.io/x": False,
    "http://127.0.0.1:8080/x": False,
    "http://[::1]:9/x": False,
    "https://bl\u00e5b\u00e6r.example/x": False,
    "https://xn--blbr-roah.example/x": False,
}


@pytest.mark.parametrize(("url", "gets_token"), list(_ENTUR_IO_ORIGIN.items()))
async def test_the_bearer_goes_by_origin_as_httpx2_parses_the_url(
    fake: FakeEntur, url: str, gets_token: bool
) -> None:
    """The flow reads (scheme, host, port) from httpx2's public URL properties: the API's
    origin in any letter case, with its default port spelt out or a user:password in
    the URL, gets the bearer; another port, scheme or host does not."""
    env = Environment(
        name="fake",
        token_url="https://partner.entur.test/oauth/token",
        audience=fake.audience,
        api_base_url="https://api.entur.io",
    )
    seen: list[httpx2.Request] = []
    async with fake.client(environment=env, transport=_recording_transport(fake, seen)) as client:
        await client.get(url)
    sent = [r for r in seen if r.url.path != "/oauth/token"]
    assert len(sent) == 1
    assert (
        "authorization" in sent[0].headers and "Bearer " in sent[0].headers["authorization"]
    ) is gets_token


async def test_withhold_token(fake: FakeEntur) -> None:
    """withhold_token=True (authlib's spelling) or auth=None sends no bearer."""
    async with fake.client() as client:
        first = await client.request("GET", "/geocoder/x", withhold_token=True)
        second = await client.get("/geocoder/y", auth=None)
    assert first.status_code == second.status_code == 200
    assert fake.token_count == 0
    assert all("authorization" not in r.headers for r in fake.api_requests)


def test_http_api_base_off_loopback_is_refused() -> None:
    """A plain-http API base URL off loopback is a configuration error."""
    with pytest.raises(ConfigurationError, match="clear text"):
        EnturClient(
            "id",
            "secret",
            client_name="acme-app",
            environment=Environment(
                name="x", token_url="https://t.test/t", audience="a", api_base_url="http://api.test"
            ),
        )


# -- status mapping -------------------------------------------------------------------------


async def test_401_refetches_once_and_retries(fake: FakeEntur) -> None:
    """A 401 makes one new token and one retry, which succeeds."""
    async with fake.client() as client:
        await client.get("/x")
        fake.revoke_all()
        response = await client.get("/x")
    assert response.status_code == 200
    assert fake.token_count == 2
    assert len(fake.api_requests) == 3


async def test_401_twice_raises_unauthorized(fake: FakeEntur) -> None:
    """Still 401 after the retry raises UnauthorizedError with the response."""
    fake.fail_api(ScriptedResponse(401, json={"message": "no"}), times=2)
    async with fake.client() as client:
        with pytest.raises(UnauthorizedError, match="401 Unauthorized") as info:
            await client.get("/x?secret=1")
    error = info.value
    assert isinstance(error, httpx2.HTTPStatusError)
    assert isinstance(error, APIError)
    assert error.status_code == 401
    assert error.response.json() == {"message": "no"}
    assert "authorization" not in error.request.headers
    assert "secret=1" not in str(error)
    assert fake.token_count == 2
    assert len(fake.api_requests) == 2


async def test_408_refetches_once_and_retries(fake: FakeEntur) -> None:
    """A 408 (token expired during processing) gets a new token and one retry."""
    fake.fail_api(408)
    async with fake.client() as client:
        response = await client.post("/x", json={"a": 1})
    assert response.status_code == 200
    assert fake.token_count == 2
    assert [r.body for r in fake.api_requests] == [b'{"a":1}'] * 2


async def test_408_twice_raises_session_timeout(fake: FakeEntur) -> None:
    """Still 408 after the retry raises SessionTimeoutError."""
    fake.fail_api(408, times=2)
    async with fake.client() as client:
        with pytest.raises(SessionTimeoutError, match="expired while the request"):
            await client.get("/x")
    assert len(fake.api_requests) == 2


async def test_408_with_unreplayable_body_is_not_retried(fake: FakeEntur) -> None:
    """A streamed request body cannot be sent twice, so a 408 raises at once."""
    fake.fail_api(408)

    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    async with fake.client() as client:
        with pytest.raises(SessionTimeoutError):
            await client.post("/x", content=body())
    assert len(fake.api_requests) == 1


async def test_403_raises_forbidden_at_once(fake: FakeEntur) -> None:
    """403 means the token lacks a permission: no new token, no retry."""
    async with fake.client() as client:
        with pytest.raises(ForbiddenError, match="lacks permission") as info:
            await client.get("/forbidden/thing")
    assert info.value.response.status_code == 403
    assert fake.token_count == 1
    assert len(fake.api_requests) == 1


@pytest.mark.parametrize("status", [400, 404, 409, 429, 500, 503])
async def test_other_statuses_come_back_as_usual(fake: FakeEntur, status: int) -> None:
    """Statuses Entur gives no auth meaning to are returned, not raised."""
    fake.fail_api(status)
    async with fake.client() as client:
        response = await client.get("/x")
    assert response.status_code == status
    assert len(fake.api_requests) == 1


async def test_stream_retries_401_and_maps_403(fake: FakeEntur) -> None:
    """client.stream behaves like client.request: 401 retried, 403 raised."""
    async with fake.client() as client:
        await client.get("/x")
        fake.revoke_all()
        async with client.stream("GET", "/x") as response:
            body = await response.aread()
        assert json.loads(body)["authenticated"] is True
        with pytest.raises(ForbiddenError) as info:
            async with client.stream("GET", "/forbidden/x"):
                pass
        assert info.value.response.json() == {"message": "Token lacks permission"}
    assert fake.token_count == 2


async def test_stream_retries_408_once_then_raises_session_timeout(fake: FakeEntur) -> None:
    """client.stream: a 408 gets one retry with a new token; a second 408 is raised."""
    fake.fail_api(408, times=2)
    async with fake.client() as client:
        with pytest.raises(SessionTimeoutError, match="even after one retry") as info:
            async with client.stream("GET", "/x"):
                pass
    assert info.value.response.status_code == 408
    assert "authorization" not in info.value.request.headers
    assert fake.token_count == 2
    first, second = (r.headers["authorization"] for r in fake.api_requests)
    assert first != second  # the retry carried the freshly fetched token


async def test_open_client_maps_api_statuses(fake: FakeEntur) -> None:
    """An open-API client also raises Entur's errors for 401/403 from the API host."""
    async with fake.client(credentials=False) as client:
        with pytest.raises(UnauthorizedError):
            await client.get("/needs-token")
    assert fake.token_count == 0


# -- token endpoint errors ------------------------------------------------------------------


async def test_wrong_secret_is_invalid_credentials(fake: FakeEntur) -> None:
    """A 401 access_denied says what to check, and is never retried."""
    async with fake.client(client_secret="wrong-secret") as client:
        with pytest.raises(InvalidCredentialsError) as info:
            await client.get("/x")
    message = str(info.value)
    for hint in ("ENTUR_CLIENT_ID", "ENTUR_CLIENT_SECRET", "environment", "audience"):
        assert hint in message
    assert info.value.status_code == 401
    assert info.value.error == "access_denied"
    assert "wrong-secret" not in message
    assert fake.token_count == 1


async def test_unknown_audience_is_invalid_credentials(fake: FakeEntur) -> None:
    """Auth0 answers an audience the client has no grant for with 403 access_denied."""
    env = Environment(
        name="fake",
        token_url="https://partner.entur.test/oauth/token",
        audience="https://api.other.test",
        api_base_url="https://api.entur.test",
    )
    async with fake.client(environment=env) as client:
        with pytest.raises(InvalidCredentialsError, match="Service not enabled") as info:
            await client.get_access_token()
    assert info.value.status_code == 403
    assert info.value.error_description is not None


async def test_token_error_carries_status_and_retry_after(fake: FakeEntur) -> None:
    """TokenRequestError carries status, OAuth error fields and Retry-After."""
    fake.fail_token(
        ScriptedResponse(
            429,
            json={"error": "too_many_requests", "error_description": "Slow down"},
            headers={"retry-after": "7"},
        )
    )
    async with fake.client(retry=NO_RETRY) as client:
        with pytest.raises(TokenRequestError) as info:
            await client.get("/x")
    error = info.value
    assert (error.status_code, error.error, error.error_description) == (
        429,
        "too_many_requests",
        "Slow down",
    )
    assert error.retry_after == 7.0
    assert not isinstance(error, InvalidCredentialsError)


async def test_client_stays_usable_after_token_failure(fake: FakeEntur) -> None:
    """A failed fetch does not poison the client: the next call fetches again."""
    fake.fail_token(503)
    async with fake.client(retry=NO_RETRY) as client:
        with pytest.raises(TokenRequestError):
            await client.get("/x")
        assert (await client.get("/x")).status_code == 200


# -- httpx options --------------------------------------------------------------------------


class _SigningAuth(httpx2.Auth):
    """A user's auth flow that adds a header of its own and also writes Authorization."""

    def __init__(self) -> None:
        self.calls = 0

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        self.calls += 1
        request.headers["X-Signature"] = "signed"
        request.headers["Authorization"] = "Basic dXNlcjpwYXNz"
        yield request


async def test_httpx_options_pass_through(fake: FakeEntur) -> None:
    """event_hooks, timeout, params and auth reach httpx2."""
    seen: list[str] = []

    async def hook(request: httpx2.Request) -> None:
        seen.append(request.url.path)

    auth = _SigningAuth()
    async with fake.client(
        event_hooks={"request": [hook]}, timeout=3.5, params={"lang": "no"}, auth=auth
    ) as client:
        response = await client.get("/x", params={"q": "1"})
        fake.revoke_all()  # the retry after a 401 goes through the user's flow too
        await client.get("/x")
    assert client.timeout.read == 3.5
    assert seen == ["/oauth/token", "/x", "/x", "/oauth/token", "/x"]
    assert not {"params", "auth"} & set(client.metadata)
    for api_request in fake.api_requests:
        assert api_request.params["lang"] == "no"
        assert api_request.headers["x-signature"] == "signed"
    assert fake.api_requests[0].params == {"lang": "no", "q": "1"}
    assert auth.calls == 3
    # The user's flow ran, but Entur still got the bearer: the API accepted the token.
    assert response.json()["authenticated"] is True
    assert fake.api_requests[-1].headers["authorization"].startswith("Bearer ")
    # Both options are for API calls: the token request is ours and gets neither.
    for token_request in fake.token_requests:
        assert token_request.query == ""
        assert "x-signature" not in token_request.headers


async def test_client_auth_runs_alone_where_no_bearer_goes(fake: FakeEntur) -> None:
    """Off the API hosts, and with withhold_token, a client-level auth works as in httpx2."""
    seen: list[httpx2.Request] = []
    async with fake.client(
        transport=_recording_transport(fake, seen), auth=_SigningAuth()
    ) as client:
        await client.get("https://example.org/x")
        await client.request("GET", "/geocoder/x", withhold_token=True)
    assert seen[0].headers["authorization"] == "Basic dXNlcjpwYXNz"
    assert "authorization" not in seen[1].headers  # withhold_token: auth=None, no flow at all
    assert fake.token_count == 0


async def test_auth_set_after_construction_is_used_and_read_back(fake: FakeEntur) -> None:
    """``client.auth`` works as httpx2's: set later, it is built as httpx2 builds it, read
    back, and runs on API requests (after which the bearer still goes on); ``None``
    turns it off again."""
    seen: list[httpx2.Request] = []
    async with fake.client(transport=_recording_transport(fake, seen)) as client:
        assert client.auth is None
        client.auth = ("user", "pass")
        assert isinstance(client.auth, httpx2.BasicAuth)
        await client.get("https://example.org/x")  # no bearer here: httpx2's Basic auth
        signing = _SigningAuth()
        client.auth = signing
        assert client.auth is signing
        await client.get("/x")
        client.auth = None
        assert client.auth is None
        await client.get("/x")
    assert seen[0].headers["authorization"] == "Basic dXNlcjpwYXNz"
    api = [r for r in seen if r.url.host == "api.entur.test"]
    assert [r.headers.get("x-signature") for r in api] == ["signed", None]
    assert all(
        r.headers.get_list("authorization") == [f"Bearer {fake.issued_tokens[0]}"] for r in api
    )
    assert signing.calls == 1


async def test_base_url_can_be_overridden(fake: FakeEntur) -> None:
    """base_url defaults to the API base but may be set (e.g. a versioned prefix)."""
    async with fake.client(base_url="https://api.entur.test/journey-planner/v3") as client:
        response = await client.get("graphql")
    assert response.json()["path"] == "/journey-planner/v3/graphql"


async def test_client_name_is_validated_even_with_options(fake: FakeEntur) -> None:
    """Validation happens before anything is built."""
    with pytest.raises(ConfigurationError):
        fake.client(client_name="bad name")


async def test_token_fetches_counts_this_clients_token_requests(fake: FakeEntur) -> None:
    """token_fetches counts the requests this client sent; a store hit counts none."""
    async with fake.client() as first, fake.client() as second:
        await first.get("/x")
        await second.get("/x")  # takes the token the first one put in the memory store
        assert (first.token_fetches, second.token_fetches) == (1, 0)
    async with fake.client(credentials=False) as open_client:
        assert open_client.token_fetches == 0


async def test_a_hook_failing_on_the_token_request_becomes_a_token_request_error(
    fake: FakeEntur,
) -> None:
    """Whatever fails on the token path (an event hook, an access_token_response
    compliance hook) reaches the caller as a TokenRequestError naming the error's type,
    with no chain holding the token request."""

    async def request_hook(request: httpx2.Request) -> None:
        if request.url.path == fake.TOKEN_PATH:
            raise RuntimeError("hook bug")

    async with fake.client(event_hooks={"request": [request_hook]}, retry=NO_RETRY) as client:
        with pytest.raises(TokenRequestError, match="RuntimeError") as caught:
            await client.get("/x")
    assert caught.value.__context__ is None
    assert caught.value.__cause__ is None

    def compliance_hook(response: httpx2.Response) -> httpx2.Response:
        raise KeyError("quirk")

    async with fake.client(retry=NO_RETRY) as client:
        client.register_compliance_hook("access_token_response", compliance_hook)
        with pytest.raises(TokenRequestError, match="KeyError"):
            await client.get("/x")


async def test_a_hook_failing_on_an_api_request_passes_through(fake: FakeEntur) -> None:
    """An API request's own event hook error reaches the caller unchanged: it is the
    user's exception, not entur_oauth's."""

    async def response_hook(response: httpx2.Response) -> None:
        if response.request.url.path == "/x":
            raise LookupError("mine")

    async with fake.client(event_hooks={"response": [response_hook]}) as client:
        with pytest.raises(LookupError, match="mine"):
            await client.get("/x")
        assert (await client.get("/y")).status_code == 200


# -- request bodies and redirects around a 401 ------------------------------------------


async def test_multipart_upload_is_retried_after_401(fake: FakeEntur) -> None:
    """A multipart body can be sent again (its files are rewound), so a 401 is retried."""
    async with fake.client() as client:
        await client.get("/x")
        fake.revoke_all()
        response = await client.post("/upload", files={"f": ("a.txt", b"hello")})
    assert response.status_code == 200
    assert fake.token_count == 2
    assert b"hello" in fake.api_requests[-1].body


async def test_unreplayable_body_401_drops_the_token_and_says_why(fake: FakeEntur) -> None:
    """A generator body cannot be retried; the 401 still drops the token for the next call."""

    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    async with fake.client() as client:
        await client.get("/x")
        fake.revoke_all()
        with pytest.raises(UnauthorizedError, match="cannot be sent twice"):
            await client.post("/upload", content=body())
        assert (await client.get("/x")).status_code == 200
    assert fake.token_count == 2


def _redirecting(fake: FakeEntur, location: str, status_there: int) -> httpx2.AsyncBaseTransport:
    inner = fake.transport()

    class Redirecting(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            if request.url.path == "/moved":
                return httpx2.Response(302, headers={"location": location})
            if request.url.host == "cdn.other.test":
                return httpx2.Response(status_there)
            return await inner.handle_async_request(request)

    return Redirecting()


async def test_errors_after_a_same_origin_redirect_carry_no_token(fake: FakeEntur) -> None:
    """Every request an error carries (the redirect's too) has its Authorization removed."""
    transport = _redirecting(fake, "https://api.entur.test/forbidden/x", 200)
    async with fake.client(transport=transport, follow_redirects=True) as client:
        with pytest.raises(ForbiddenError) as info:
            await client.get("/moved")
    error = info.value
    sent = [error.request, error.response.request, *(r.request for r in error.response.history)]
    assert len(sent) == 3
    assert all("authorization" not in r.headers for r in sent)


async def test_401_from_a_foreign_host_after_redirect_keeps_the_token(fake: FakeEntur) -> None:
    """A 401 from another host (after a redirect) says nothing about our token."""
    transport = _redirecting(fake, "https://cdn.other.test/file", 401)
    async with fake.client(transport=transport, follow_redirects=True) as client:
        for _ in range(3):
            response = await client.get("/moved")
            assert response.status_code == 401
            assert "authorization" not in response.request.headers
        assert client.token_fetches == 1


# -- construction: client_secret types -----------------------------------------------------


@pytest.mark.parametrize("secret", [Secret(""), b"bytes-secret", 42])
def test_empty_or_mistyped_secrets_are_configuration_errors(secret: object) -> None:
    """Secret('') and non-string secrets fail at construction with our error."""
    with pytest.raises(ConfigurationError):
        EnturClient("cid", secret, client_name="acme-app")  # type: ignore[arg-type]


async def test_cancelled_on_entry_leaves_no_task_group_open(fake: FakeEntur) -> None:
    """``async with client`` cancelled while entering (the background refresher starting)
    closes its task group and its connections before the cancellation goes on: the
    caller's cancel scopes stay intact (asyncio and trio alike) and the client is closed."""
    client = fake.client(refresh=RefreshPolicy(background=True))
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with client:
            pytest.fail("the body ran in a cancelled scope")
    assert scope.cancelled_caught
    assert client.is_closed
    # A cancel scope and a task group of the caller's still work.
    with anyio.move_on_after(5) as later:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 0)
        await anyio.sleep(0.001)
    assert not later.cancelled_caught
    async with fake.client() as again:
        assert (await again.get("/x")).status_code == 200


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("retry", 3),
        ("refresh", "x"),
        ("clock", object()),
        ("base_url", "https://h:abc"),
        ("base_url", 7),
    ],
)
async def test_settings_of_the_wrong_kind_are_refused_at_construction(
    fake: FakeEntur, setting: str, value: object
) -> None:
    """``retry=3``, ``refresh="x"``, ``clock=object()`` and an unparsable ``base_url`` raise
    a ConfigurationError naming the setting at construction, not a raw error later."""
    with pytest.raises(ConfigurationError, match=setting):
        fake.client(**{setting: value})


async def test_user_event_hooks_see_the_token_request_too(fake: FakeEntur) -> None:
    """A request event hook runs on the token request as well (as the README warns: its
    body holds the secret), so a hook can tell it by ``client.environment.token_url``."""
    urls: list[str] = []

    async def hook(request: httpx2.Request) -> None:
        urls.append(str(request.url))

    async with fake.client(event_hooks={"request": [hook]}) as client:
        await client.get("/x")
    assert urls == [client.environment.token_url, "https://api.entur.test/x"]


async def test_answered_requests_carry_no_bearer_whatever_headers_they_had(
    fake: FakeEntur,
) -> None:
    """The request of a returned API response has no Authorization, also when the caller
    set one of their own (the bearer replaced it) or an event hook added headers after it;
    the API did get the bearer each time."""

    async def add_header(request: httpx2.Request) -> None:
        request.headers["X-Late"] = "1"

    seen: list[httpx2.Request] = []
    async with fake.client(
        event_hooks={"request": [add_header]}, transport=_recording_transport(fake, seen)
    ) as client:
        plain = await client.get("/x")
        own = await client.get("/x", headers={"Authorization": "Basic dTpw", "X-A": "1"})
    for response in (plain, own):
        assert response.status_code == 200
        assert "authorization" not in response.request.headers
    api = [r for r in seen if r.url.path == "/x"]
    # Exactly one Authorization each time, the bearer: the caller's own was replaced.
    bearer = f"Bearer {fake.issued_tokens[0]}"
    assert [r.headers.get_list("authorization") for r in api] == [[bearer], [bearer]]
    assert [r.headers.get("x-a") for r in api] == [None, "1"]
    assert all(r.headers["x-late"] == "1" for r in api)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", "x"),
        ("timeout", -1),
        ("timeout", 10**400),
        ("timeout", float("nan")),
        ("update_token", 5),
        ("limits", 5),
        ("headers", 5),
        ("transport", 5),
        ("follow_redirects", "no"),
        ("max_redirects", "x"),
        ("verify", 5),
        ("event_hooks", 5),
        ("event_hooks", {"request": [5]}),
    ],
)
def test_httpx2_options_of_the_wrong_kind_are_configuration_errors(
    option: str, value: object
) -> None:
    """An httpx2 option (or update_token) of the wrong kind is refused at construction with
    a ConfigurationError naming it, not accepted to fail at the first request or raised as
    a bare TypeError/AttributeError from inside httpx2."""
    with pytest.raises(ConfigurationError, match=option):
        EnturClient("cid", "secret", client_name="acme-app", **{option: value})


def test_httpx2_options_of_every_documented_kind_are_accepted() -> None:
    """The kinds httpx2 documents for these options still work."""
    for options in (
        {"timeout": 5},
        {"timeout": None},
        {"timeout": (1, 2, 3, 4)},
        {"timeout": httpx2.Timeout(3)},
        {"verify": False},
        {"headers": [("a", "b")]},
        {"limits": httpx2.Limits()},
        {"event_hooks": {"request": []}},
        {"max_redirects": 3},
        {"params": "a=1"},
        {"cookies": {"a": "b"}},
    ):
        EnturClient("cid", "secret", client_name="acme-app", **options)
