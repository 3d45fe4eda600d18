"""Type-checked usage of the public API (run by mypy, never executed)."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import httpx2

from entur_oauth import (
    APIError,
    Clock,
    ConfigurationError,
    EnturClient,
    EnturError,
    Environment,
    FileTokenStore,
    ForbiddenError,
    InvalidCredentialsError,
    LifetimeError,
    RedisTokenStore,
    RefreshPolicy,
    RetryPolicy,
    Secret,
    TokenRequestError,
    TokenStore,
    get_environment,
)


async def partner_call() -> dict[str, object]:
    """The quick start, as a user writes it."""
    async with EnturClient.from_env() as entur:
        response: httpx2.Response = await entur.get("/personalisation/v1/programs/1")
        data: dict[str, object] = response.json()
        token: str = await entur.get_access_token()
        assert token
        return data


async def configured() -> None:
    """Every constructor argument with its type."""
    env: Environment = get_environment("staging")
    custom = Environment(
        name="local",
        token_url="http://127.0.0.1:8000/oauth/token",
        audience="https://api.local",
        api_base_url="http://127.0.0.1:8000",
        extra_token_hosts=frozenset({"api2.local"}),
    )
    async with anyio.create_task_group() as tg:
        client = EnturClient(
            "id",
            Secret("secret"),
            client_name="acme-app",
            environment=custom if env.name == "x" else "dev",
            refresh=RefreshPolicy(background=True, advisory_min=600),
            retry=RetryPolicy(attempts=5, timeout=5.0),
            task_group=tg,
            timeout=httpx2.Timeout(10.0),
        )
        async with client, client.stream("GET", "/x") as response:
            await response.aread()


def handles(exc: EnturError) -> int | None:
    """The exception attributes users read."""
    if isinstance(exc, InvalidCredentialsError):
        return exc.status_code
    if isinstance(exc, TokenRequestError):
        delay: float | None = exc.retry_after
        return int(delay or 0)
    if isinstance(exc, ForbiddenError | APIError):
        response: httpx2.Response = exc.response
        return response.status_code
    if isinstance(exc, ConfigurationError):
        return None
    if isinstance(exc, LifetimeError):
        message: str = str(exc)  # also a RuntimeError, as httpx2's closed-client error is
        runtime: RuntimeError = exc
        assert message
        assert runtime
    return None


class StepClock:
    """A user's own clock: the Clock protocol is three methods."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.lowlevel.checkpoint()


def clocked() -> EnturClient:
    """A user's clock is a Clock, and EnturClient takes one."""
    clock: Clock = StepClock()
    return EnturClient("id", "secret", client_name="acme-app", clock=clock)


def stores(redis_url: str) -> list[TokenStore]:
    """Every store satisfies the TokenStore protocol."""
    return [FileTokenStore("~/.cache/entur-oauth/tokens.json"), RedisTokenStore(redis_url)]


async def metrics(client: EnturClient) -> int:
    """token_fetches is an int."""
    count: int = client.token_fetches
    return count


async def authlib_surface() -> None:
    """authlib's surface as a user reaches for it: seed, update_token, token, fetch_token."""

    async def save(
        token: dict[str, object], refresh_token: str | None = None, **kw: object
    ) -> None:
        assert refresh_token is None

    def quirk(response: httpx2.Response) -> httpx2.Response:
        return response

    seed = {"access_token": "abc", "token_type": "Bearer", "expires_at": 2_000_000_000}
    async with EnturClient.from_env(token=seed, update_token=save) as entur:
        entur.register_compliance_hook("access_token_response", quirk)
        fresh = await entur.fetch_token()
        access: str = fresh["access_token"]
        current = entur.token
        assert current is None or current["access_token"] == access
        active: bool = await entur.ensure_active_token()
        assert active
