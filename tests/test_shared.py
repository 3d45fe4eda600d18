"""SharedStore, the manager's view of a token store: races between processes on one store
(issue 19 item 4) and the fallback when the store fails; asyncio and trio."""

from __future__ import annotations

import pytest

from entur_oauth import MemoryTokenStore, RetryPolicy, TokenRequestError
from entur_oauth._codec import TokenCodec, store_key
from entur_oauth._secrets import Secret
from entur_oauth.testing import FakeClock, FakeEntur

pytestmark = pytest.mark.anyio


def key_of(fake: FakeEntur) -> str:
    """The store key the fake's in-process client uses."""
    env = fake.environment()
    return store_key(env.token_url, env.audience, fake.client_id)


async def sealed_token_from_another_process(fake: FakeEntur) -> bytes:
    """A fresh token fetched by a client outside the store, sealed as its process writes it."""
    async with fake.client(token_store=MemoryTokenStore()) as other:
        await other.get("/x")
        assert other._manager is not None
        token = other._manager.current
    assert token is not None
    return TokenCodec(Secret(fake.client_secret), key_of(fake)).encode(token)


class WriteBeforeDelete(MemoryTokenStore):
    """A store on which another process writes ``fresh`` between this process's read of
    the rejected token and its delete of it."""

    def __init__(self) -> None:
        super().__init__()
        self.fresh: bytes | None = None

    async def delete(self, key: str, *, expected: bytes | None = None) -> None:
        """Let the other process write first, then delete as asked."""
        if self.fresh is not None:
            await self.set(key, self.fresh, ttl=60)
            self.fresh = None
        await super().delete(key, expected=expected)


async def test_deleting_a_rejected_token_keeps_a_fresh_one_stored_meanwhile(
    fake: FakeEntur,
) -> None:
    """The API rejects the stored token and the replacement fetch fails, so the client
    deletes the rejected token; another process stores a fresh token between that read and
    the delete: the delete (a compare-and-delete) leaves the fresh token for everyone."""
    store = WriteBeforeDelete()
    once = RetryPolicy(attempts=1)  # the scripted failure is not retried away
    async with fake.client(token_store=store, retry=once) as client:
        assert (await client.get("/x")).status_code == 200
        fake.revoke_all()
        fresh = await sealed_token_from_another_process(fake)
        store.fresh = fresh
        fake.fail_token(500)
        with pytest.raises(TokenRequestError):
            await client.get("/x")
    assert store.fresh is None  # the other process did write
    assert await store.get(key_of(fake)) == fresh
    fetched = fake.token_count
    async with fake.client(token_store=store) as later:
        assert (await later.get("/x")).status_code == 200
    assert fake.token_count == fetched  # the fresh token served the later client


async def test_a_stored_token_claiming_more_life_than_it_was_issued_with_is_not_trusted() -> None:
    """A process on a host whose wall clock is 2 h ahead stores a token: its expiry, in
    wall time, lies 2 h beyond the real one. Another process must not take it (it would
    use it for 2 h past its real expiry): it fetches its own, and never sends the stored
    one after that token's real expiry."""
    here = FakeClock()
    ahead = FakeClock(start=here.time() + 7200)
    fake = FakeEntur(clock=here, expires_in=3600)
    store = MemoryTokenStore()
    async with fake.client(token_store=store, clock=ahead) as writer:
        assert (await writer.get("/x")).status_code == 200
    (stored,) = fake.issued_tokens
    async with fake.client(token_store=store, clock=here) as reader:
        assert (await reader.get("/x")).status_code == 200
        assert fake.token_count == 2  # its own token, not the one claiming 3 h of life
        sent = len(fake.api_requests)
        for clock in (here, ahead):
            clock.advance(3601)  # past the stored token's real expiry
        assert (await reader.get("/x")).status_code == 200
    later = [r.headers.get("authorization", "") for r in fake.api_requests[sent:]]
    assert later
    assert not any(stored in header for header in later)
