"""FileTokenStore: a real file, real flock locks, real processes; asyncio and trio."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from entur_oauth import (
    ConfigurationError,
    EnturClient,
    FileTokenStore,
)
from entur_oauth._codec import store_key
from entur_oauth.testing import FakeClock, FakeEntur

from .conftest import LoopbackServer
from .fleet_worker import HoldFirstTokenRequest, Worker

pytestmark = pytest.mark.anyio


def key_of(fake: FakeEntur) -> str:
    """The store key the fake's in-process client uses."""
    env = fake.environment()
    return store_key(env.token_url, env.audience, fake.client_id)


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings entur_oauth logged."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "entur_oauth" and r.levelno == logging.WARNING
    ]


def no_secrets_in(text: str, fake: FakeEntur) -> None:
    """Assert that neither the client secret nor any issued token is in ``text``."""
    assert fake.client_secret not in text
    for token in fake.issued_tokens:
        assert token not in text


async def call(client: EnturClient) -> int:
    """One authenticated API call; its status."""
    return (await client.get("/x")).status_code


# -- the file ------------------------------------------------------------------------------


async def test_file_is_private_and_replaced_atomically(tmp_path: Path) -> None:
    """The directory is 0700, the file and its locks 0600; writes replace it whole."""
    path = tmp_path / "cache" / "tokens.json"
    store = FileTokenStore(path)
    async with store.lock("entur-oauth:abc"):
        await store.set("entur-oauth:abc", b"sealed-1", ttl=60)
    first_inode = path.stat().st_ino
    await store.set("entur-oauth:abc", b"sealed-2", ttl=60)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != first_inode  # replaced by rename, never rewritten in place
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["tokens.json", "tokens.json.abc.lock", "tokens.json.lock"]
    for lock in names[1:]:
        assert stat.S_IMODE((path.parent / lock).stat().st_mode) == 0o600
    assert await store.get("entur-oauth:abc") == b"sealed-2"


async def test_temporaries_left_by_killed_writers_are_removed_on_the_next_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer killed between mkstemp and the rename leaves ``.tokens.json.*.tmp``; the next
    write removes it once it is a minute old, and leaves a fresh one and other files alone."""
    path = tmp_path / "tokens.json"
    store = FileTokenStore(path)
    await store.set("k", b"one", ttl=60)
    orphan = tmp_path / ".tokens.json.k1ll3d.tmp"
    fresh = tmp_path / ".tokens.json.wr1t1ng.tmp"
    other = tmp_path / ".other.json.k1ll3d.tmp"
    for leftover in (orphan, fresh, other):
        leftover.write_bytes(b'{"version": 1, "tok')
    hour_ago = time.time() - 3600
    for old in (orphan, other):
        os.utime(old, (hour_ago, hour_ago))
    with caplog.at_level(logging.INFO, logger="entur_oauth"):
        await store.set("k", b"two", ttl=60)
    assert not orphan.exists()
    assert fresh.exists()
    assert other.exists()
    assert f"removed {orphan}" in caplog.text
    assert await store.get("k") == b"two"


async def test_get_set_delete_and_compare_and_delete(tmp_path: Path) -> None:
    """Entries per key; delete with ``expected`` only removes that very value; TTL honoured."""
    store = FileTokenStore(tmp_path / "tokens.json")
    assert await store.get("k1") is None
    await store.set("k1", b"one", ttl=60)
    await store.set("k2", b"two", ttl=60)
    await store.delete("k1", expected=b"not-one")
    assert await store.get("k1") == b"one"
    await store.delete("k1", expected=b"one")
    assert await store.get("k1") is None
    assert await store.get("k2") == b"two"
    await store.delete("k2")
    assert await store.get("k2") is None
    await store.set("k3", b"gone", ttl=0)  # already expired: never served, pruned on write
    assert await store.get("k3") is None
    await store.set("k4", b"four", ttl=60)
    assert set(json.loads((tmp_path / "tokens.json").read_text())["tokens"]) == {"k4"}


# -- refusing unsafe files -----------------------------------------------------------------


def _symlink(path: Path) -> None:
    victim = path.with_name("victim")
    victim.write_text("{}")
    victim.chmod(0o600)
    path.symlink_to(victim)


def _mode(mode: int) -> object:
    def make(path: Path) -> None:
        path.write_text("")
        path.chmod(mode)

    return make


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_symlink, "symbolic link"),
        (_mode(0o644), "chmod 600"),
        (_mode(0o640), "chmod 600"),
        (_mode(0o602), "chmod 600"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: os.mkfifo(p, 0o600), "not a regular file"),
        (lambda p: p.with_name(p.name + ".lock").symlink_to("/etc/passwd"), "symbolic link"),
    ],
    ids=["symlink", "0644", "0640", "0602", "directory", "fifo", "symlinked-lock"],
)
def test_unsafe_files_are_refused_at_construction(
    make: object, message: str, tmp_path: Path
) -> None:
    """A symlink, a file others may read or write, or a non-file: ConfigurationError."""
    path = tmp_path / "tokens.json"
    make(path)  # type: ignore[operator]
    with pytest.raises(ConfigurationError, match=message):
        FileTokenStore(path)


async def test_symlink_planted_later_is_refused_and_the_client_carries_on(
    fake: FakeEntur, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A symlink swapped in after start-up is never followed; the client uses its own token."""
    path = tmp_path / "tokens.json"
    store = FileTokenStore(path)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path.symlink_to(victim)
    async with fake.client(token_store=store) as client:
        assert await call(client) == 200
    assert victim.read_text() == "precious"
    assert path.is_symlink()
    warnings = store_warnings(caplog)
    assert warnings
    assert all("symbolic link" in w for w in warnings)
    no_secrets_in(caplog.text, fake)


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "not-an-object", "bad-base64", "wrong-version"],
)
async def test_corrupt_file_is_read_as_empty_logged_and_repaired(
    damage: str, fake: FakeEntur, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Corrupt or truncated: a warning, one fetch, and the file is rewritten whole and valid."""
    path = tmp_path / "tokens.json"
    key = key_of(fake)
    valid = json.dumps({"version": 1, "tokens": {key: {"value": "QUJD", "expires": 2e9}}})
    content = {
        "garbage": b"\x00\xff not json at all",
        "truncated": valid.encode()[: len(valid) // 2],
        "not-an-object": b"[1, 2, 3]",
        "bad-base64": valid.replace("QUJD", "!!not base64!!").encode(),
        "wrong-version": valid.replace('"version": 1', '"version": 99').encode(),
    }[damage]
    path.write_bytes(content)
    path.chmod(0o600)
    async with fake.client(token_store=FileTokenStore(path)) as client:
        assert await call(client) == 200
    assert fake.token_count == 1
    assert store_warnings(caplog), "the corruption was not logged"
    repaired = json.loads(path.read_bytes())
    assert repaired["version"] == 1
    assert set(repaired["tokens"]) == {key}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The repaired entry serves the next client without a fetch.
    async with fake.client(token_store=FileTokenStore(path)) as client:
        assert await call(client) == 200
    assert fake.token_count == 1


async def test_sealed_value_tampered_with_is_refetched(fake: FakeEntur, tmp_path: Path) -> None:
    """An entry whose ciphertext was altered fails authentication and is simply re-fetched."""
    path = tmp_path / "tokens.json"
    async with fake.client(token_store=FileTokenStore(path)) as client:
        await call(client)
    document = json.loads(path.read_bytes())
    entry = document["tokens"][key_of(fake)]
    sealed = bytearray(base64.b64decode(entry["value"]))
    sealed[-1] ^= 1
    entry["value"] = base64.b64encode(bytes(sealed)).decode()
    path.write_text(json.dumps(document))
    async with fake.client(token_store=FileTokenStore(path)) as client:
        assert await call(client) == 200
    assert fake.token_count == 2


async def test_read_only_file_is_used_but_not_written(
    fake: FakeEntur, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Mode 0400: the client fetches its own token, logs a warning, leaves the file alone."""
    path = tmp_path / "tokens.json"
    path.write_text('{"version": 1, "tokens": {}}')
    path.chmod(0o400)
    async with fake.client(token_store=FileTokenStore(path)) as client:
        assert await call(client) == 200
        assert await call(client) == 200
    assert fake.token_count == 1
    assert path.read_text() == '{"version": 1, "tokens": {}}'
    (warning,) = store_warnings(caplog)
    assert "write failed" in warning
    assert "read-only" in warning
    no_secrets_in(caplog.text, fake)


def _worker_config(fake: FakeEntur, url: str, **extra: object) -> dict[str, object]:
    return {
        "base_url": url,
        "audience": fake.audience,
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "backend": "asyncio",
        "store": "file",
        **extra,
    }


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.slow
def test_unwritable_directory(backend: str, fake: FakeEntur, tmp_path: Path) -> None:
    """A directory the process cannot write: a real worker still gets its call through."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        # root ignores file modes; drop the capabilities that let it, for the worker only.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a directory unwritable")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]
        # Dropping from the bounding set needs CAP_SETPCAP, which some containers lack.
        if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode:
            pytest.skip("setpriv cannot drop capabilities here: cannot make a directory unwritable")
    directory = tmp_path / "locked"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with LoopbackServer(fake) as server:
            config = _worker_config(
                fake, server.url, backend=backend, target=str(directory / "tokens.json")
            )
            worker = Worker(config, prefix=prefix)
            worker.wait_ready()
            worker.go()
            report = worker.result()
    finally:
        directory.chmod(0o700)
    assert report["status"] == 200
    assert report["fetches"] == 1
    assert any("failed" in w and "Permission denied" in w for w in report["warnings"])
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.slow
def test_full_disk(backend: str, fake: FakeEntur, tmp_path: Path) -> None:
    """Writes fail as on a full disk (RLIMIT_FSIZE): the call succeeds, no temp file is left."""
    path = tmp_path / "tokens.json"
    with LoopbackServer(fake) as server:
        config = _worker_config(fake, server.url, backend=backend, target=str(path))
        # Unmeasured: coverage could not write its data file under this limit either.
        worker = Worker({**config, "fsize_limit": 64}, measured=False)
        worker.wait_ready()
        worker.go()
        report = worker.result()
    assert report["status"] == 200
    assert report["fetches"] == 1
    (warning,) = report["warnings"]
    assert "token store write failed" in warning
    assert "File too large" in warning
    assert not path.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


async def test_lock_held_too_long_falls_back_to_own_fetch(
    fake: FakeEntur, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A fetch lock held past lock_timeout (the default 60 s, on the client's fake clock,
    so no real waiting): this client fetches on its own, with a warning."""
    path = tmp_path / "tokens.json"
    holder = FileTokenStore(path)
    clock = FakeClock(autojump=True)
    store = FileTokenStore(path, clock=clock)
    async with holder.lock(key_of(fake)), fake.client(token_store=store, clock=clock) as client:
        assert await call(client) == 200
    # Gave up once its clock passed lock_timeout (the last sleep adds at most 0.075 s).
    assert 60 <= clock.monotonic() < 61
    assert fake.token_count == 1
    (warning,) = store_warnings(caplog)
    assert "lock failed (TimeoutError" in warning


# -- a fetcher killed mid-fetch ------------------------------------------------------------


@pytest.mark.slow
def test_fetcher_killed_mid_fetch_others_recover_with_one_fetch(
    fake: FakeEntur, tmp_path: Path
) -> None:
    """SIGKILL the process holding the fetch lock: the kernel frees the lock at once."""
    path = tmp_path / "tokens.json"
    app = HoldFirstTokenRequest(fake)
    with LoopbackServer(app) as server:
        config = _worker_config(fake, server.url, target=str(path))
        holder = Worker(config, measured=False)
        waiters = [Worker({**config, "backend": "trio" if i % 2 else "asyncio"}) for i in range(4)]
        try:
            for worker in (holder, *waiters):
                worker.wait_ready()
            holder.go()
            deadline = time.monotonic() + 10
            while app.held_at is None:
                assert time.monotonic() < deadline, "the holder never asked for a token"
                time.sleep(0.01)
            for worker in waiters:
                worker.go()
            time.sleep(0.5)  # let the waiters queue on the lock (ordering, not expiry)
            killed_at = time.time()
            holder.kill()
            reports = [worker.result() for worker in waiters]
        finally:
            for worker in (holder, *waiters):
                worker.kill()
    recovery = max(r["done"] for r in reports) - killed_at
    assert [r["status"] for r in reports] == [200] * 4
    assert fake.token_count == 1  # plus the one the killed holder never got
    assert sorted(r["fetches"] for r in reports) == [0, 0, 0, 1]
    assert recovery < 3.0  # no lease to wait out: the kernel freed the lock at the kill
    print(f"\nfile store: recovered {recovery:.3f} s after the lock holder was killed")


# -- directories and paths checked at construction -------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o000])
@pytest.mark.parametrize("operation", ["set", "delete", "lock"])
async def test_missing_directories_are_created_0700_whatever_the_umask(
    tmp_path: Path, operation: str, umask: int
) -> None:
    """set(), delete() and the fetch lock each create the token file's missing directories
    (parents included) with mode 0700, also under a umask that would give 0755 or 0777."""
    top = tmp_path / "cache"
    store = FileTokenStore(top / "entur" / "tokens.json")
    old = os.umask(umask)
    try:
        if operation == "set":
            await store.set("entur-oauth:abc", b"sealed", ttl=60)
        elif operation == "delete":
            await store.delete("entur-oauth:abc")
        else:
            async with store.lock("entur-oauth:abc"):
                pass
    finally:
        os.umask(old)
    for directory in (top, top / "entur"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


async def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    """A directory that already exists is the user's: its mode is not changed."""
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    await FileTokenStore(directory / "tokens.json").set("entur-oauth:abc", b"x", ttl=60)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755


def _under_a_file(tmp_path: Path) -> Path:
    regular = tmp_path / "regular"
    regular.write_text("x")
    return regular / "tokens.json"


@pytest.mark.parametrize(
    ("make_path", "problem"),
    [
        (lambda tmp: "/", "names a directory"),
        (lambda tmp: f"{tmp}/", "names a directory"),
        (lambda tmp: tmp, "not a regular file"),
        (_under_a_file, "cannot be reached"),
        (lambda tmp: "/etc/hostname/tokens.json", "cannot be reached"),
        (lambda tmp: f"{tmp}/a\x00b.json", "NUL"),
        (lambda tmp: "", "path of a token file"),
        (lambda tmp: b"/tmp/tokens.json", "path of a token file"),
        (lambda tmp: f"{tmp}/{'x' * 300}.json", "cannot be reached"),
    ],
)
def test_unusable_paths_are_configuration_errors(
    tmp_path: Path, make_path: Callable[[Path], object], problem: str
) -> None:
    """The root, a directory, a path under a regular file, a NUL, an empty or bytes path and
    an over-long name raise ConfigurationError at construction, never ValueError or
    NotADirectoryError at the first token."""
    path = make_path(tmp_path)
    if path == "/etc/hostname/tokens.json" and not Path("/etc/hostname").is_file():
        pytest.skip("no regular file /etc/hostname on this system")
    with pytest.raises(ConfigurationError, match=problem):
        FileTokenStore(path)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["lock_timeout", "poll_interval"])
@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), 10**400, "5", True, None])
def test_bad_timing_options_are_configuration_errors_naming_them(
    tmp_path: Path, option: str, value: object
) -> None:
    """Zero, negative, NaN, infinite and non-numeric timings are refused by name."""
    with pytest.raises(ConfigurationError, match=option):
        FileTokenStore(tmp_path / "tokens.json", **{option: value})  # type: ignore[arg-type]


_CONSTRUCT = """
import sys
from entur_oauth import ConfigurationError, FileTokenStore
try:
    FileTokenStore(sys.argv[1])
except ConfigurationError as exc:
    print("ConfigurationError:", exc)
except BaseException as exc:
    print(type(exc).__name__)
else:
    print("accepted")
"""


@pytest.mark.slow
def test_a_directory_the_user_may_not_enter_is_a_configuration_error(tmp_path: Path) -> None:
    """A token file in a directory this user may not enter (no search permission) is
    refused at construction with ConfigurationError, not PermissionError. Run in a real
    process without the privileges that let root ignore file modes."""
    import sys

    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a directory unenterable")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]
        if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode:
            pytest.skip("setpriv cannot drop capabilities here: cannot test as a non-root user")
    closed = tmp_path / "closed"
    closed.mkdir()
    closed.chmod(0o000)
    try:
        result = subprocess.run(
            [*prefix, sys.executable, "-c", _CONSTRUCT, str(closed / "tokens.json")],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    finally:
        closed.chmod(0o700)
    assert result.stdout.startswith("ConfigurationError:"), result.stdout + result.stderr
    assert "Permission denied" in result.stdout
    assert str(closed) in result.stdout
