"""FileTokenStore: one token fetch for all the processes of one host, through one file.

Three kinds of file live side by side (say the token file is ``tokens.json``):

* ``tokens.json``: ``{"version": 1, "tokens": {key: {"value": base64, "expires": epoch}}}``,
  mode 0600, only ever replaced whole (temporary file plus ``os.replace`` in the same
  directory), so a reader sees the old file or the new one, never half of one.
* ``tokens.json.lock``: held for the milliseconds of a read-modify-write, so two writers
  never lose each other's entry and compare-and-delete is atomic.
* ``tokens.json.<tag>.lock``: one per client identity (``tag`` comes from the store key),
  held around the token fetch, so N processes make one fetch and clients with other
  credentials sharing the file never wait for it.

The locks are ``flock`` locks (through ``filelock``): the kernel drops them when their
process dies, so a fetcher killed mid-fetch never blocks the others. Lock files are left in
place on purpose: unlinking one while another process waits on it would let two processes
each hold "the" lock.

Every call honours its caller's cancellation (``abandon_on_cancel``): a timeout around a
call returns on time even while another process holds the write lock. The abandoned
worker thread then writes nothing (it checks, under the write lock, that its caller is
still there) and releases any fetch lock it took, so it can neither put an old token over
a newer one nor leave a lock held.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import glob
import json
import os
import random
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._errors import ConfigurationError
from ._policy import check_clock, check_positive_seconds

if TYPE_CHECKING:
    import logging

    from filelock import BaseFileLock

    from ._clock import Clock

__all__ = ["FileTokenStore"]


def _logger() -> logging.Logger:
    # logging is imported when there is something to log: the CLI's cached token path reads
    # this file without it (logging alone costs ~7 ms of start-up).
    import logging

    return logging.getLogger("entur_oauth")


_FORMAT_VERSION = 1
#: A token file is a few hundred bytes per client; anything this large is not ours.
_MAX_FILE_BYTES = 1024 * 1024
#: How long a read-modify-write waits for another writer (their holds last milliseconds).
_WRITE_LOCK_TIMEOUT = 10.0
#: A temporary file older than this, seen under the write lock, was left by a killed writer.
_STALE_TEMPORARY_AGE = 60.0

_Tokens = dict[str, Any]


class FileTokenStore:
    """Tokens shared by the processes of one host through a file only its owner can read.

    For the CLI and for several worker processes on one machine. Each entry is sealed
    (AES-GCM, key derived from the client secret) before it reaches this store, so the
    file holds nothing usable without the secret. A fetch is guarded by a cross-process
    lock, so N processes starting at once make one token request.

    The file is refused if it is a symbolic link, is not a regular file, belongs to another
    user, or is readable or writable by group or others. A corrupt or truncated file is
    logged, read as empty and rewritten by the next saved token. A file without the owner's
    write bit is used read-only (saving raises, and the client keeps its own token).

    Args:
        path: The token file; created (with its missing directories, mode 0700) when
            first needed. ``~`` is expanded.
        lock_timeout: Longest wait, in seconds, for another process's token fetch; after
            it this process fetches on its own.
        poll_interval: Seconds between attempts to take a fetch lock held elsewhere.
        clock: The clock the fetch lock wait runs on (``lock_timeout``,
            ``poll_interval``); the default is the real one. Tests pass the client's fake
            clock.

    Raises:
        ConfigurationError: The path is not a file path (empty, a directory, a NUL in it),
            cannot be reached (a parent is a file, or a directory this user may not enter),
            the file exists but is unsafe (see above), an option is out of range, or the
            system is not POSIX.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock_timeout: float = 60.0,
        poll_interval: float = 0.05,
        clock: Clock | None = None,
    ) -> None:
        if os.name != "posix":
            # Its safety rests on POSIX file modes, owners, O_NOFOLLOW and flock.
            raise ConfigurationError(
                "FileTokenStore needs a POSIX system (Linux, macOS); on Windows use "
                "RedisTokenStore, or the default in-memory store."
            )
        # The policies' check: a real, finite number of at most MAX_SECONDS (a huge int
        # would be an OverflowError at the first lock wait), and positive here.
        lock_timeout = check_positive_seconds("FileTokenStore: lock_timeout", lock_timeout)
        poll_interval = check_positive_seconds("FileTokenStore: poll_interval", poll_interval)
        check_clock("FileTokenStore", clock)
        # None until first needed: the SystemClock's module imports anyio, which the CLI's
        # cached token path does without.
        self._clock = clock
        self.path = _token_path(path)
        self.lock_timeout = lock_timeout
        self.poll_interval = poll_interval
        self._write_lock_path = self.path.with_name(self.path.name + ".lock")
        # Fail at start-up, where a wrong path or mode is a deployment error the user can
        # fix; later faults (the file changed under us) are raised per call and the client
        # falls back to its own token.
        try:
            st: os.stat_result | None = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            # A parent that is a file, a directory this user may not enter, a name too long.
            raise _unsafe(self.path, f"cannot be reached ({exc.strerror})") from None
        if st is not None:
            _check_token_file(st, self.path)
        _check_lock_file(self._write_lock_path)

    # -- TokenStore ----------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """Return the sealed token stored under ``key``, or ``None``.

        Raises:
            ConfigurationError: The file has become unsafe (symlink, mode, owner).
            OSError: The file cannot be read.
        """
        import anyio  # here, not at the top: the CLI's cached token path reads without it

        # Abandoned on cancel: a read changes nothing, and the thread ends on its own.
        return await anyio.to_thread.run_sync(self._get_sync, key, abandon_on_cancel=True)

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing the file atomically.

        Raises:
            ConfigurationError: The file has become unsafe.
            OSError: The directory is not writable, the disk is full, or the file is
                read-only.
            TimeoutError: Another writer held the file for too long.
        """

        entry = {
            "value": base64.b64encode(value).decode("ascii"),
            "expires": time.time() + ttl,
        }

        def change(tokens: _Tokens) -> bool:
            tokens[key] = entry
            return True

        await self._update_in_thread(change)

    async def delete(self, key: str, *, expected: bytes | None = None) -> None:
        """Remove ``key``; with ``expected``, only while it still holds exactly that value.

        Raises:
            ConfigurationError: The file has become unsafe.
            OSError: The file cannot be rewritten.
            TimeoutError: Another writer held the file for too long.
        """

        def change(tokens: _Tokens) -> bool:
            if key not in tokens:
                return False
            if expected is not None and _entry_value(tokens[key], self.path) != expected:
                return False  # another process already stored a replacement: keep it
            del tokens[key]
            return True

        await self._update_in_thread(change)

    def lock(self, key: str) -> _FetchLock:
        """Return the cross-process lock held around the fetch of ``key``'s token."""
        tag = key.rpartition(":")[2][:16] or "default"
        return _FetchLock(self, self.path.with_name(f"{self.path.name}.{tag}.lock"))

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.path)!r})"

    @property
    def clock(self) -> Clock:
        """The clock the fetch lock wait runs on."""
        if self._clock is None:
            from ._clock import SystemClock

            self._clock = SystemClock()
        return self._clock

    async def _update_in_thread(self, change: Callable[[_Tokens], bool]) -> None:
        import anyio

        left = threading.Event()
        try:
            await anyio.to_thread.run_sync(self._update, change, left, abandon_on_cancel=True)
        except BaseException:
            # The thread, abandoned, sees this before it writes and gives up: its token
            # could otherwise land over a newer one written meanwhile.
            left.set()
            raise

    # -- blocking helpers, run in a worker thread ----------------------------------------

    def _get_sync(self, key: str) -> bytes | None:
        tokens = self._read(for_update=False)
        entry = tokens.get(key)
        if entry is None:
            return None
        value = _entry_value(entry, self.path)
        if value is None:
            return None
        if entry["expires"] <= time.time():
            return None
        return value

    def _read(self, *, for_update: bool) -> _Tokens:
        """Return the entries of the token file ({} when missing, empty or corrupt)."""
        try:
            # O_NOFOLLOW: never read through a symlink someone planted; O_NONBLOCK: a FIFO
            # in the file's place cannot hang us before fstat refuses it.
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _unsafe(self.path, "is a symbolic link") from None
            raise
        with os.fdopen(fd, "rb") as file:
            st = os.fstat(file.fileno())
            _check_token_file(st, self.path)
            if for_update and not st.st_mode & stat.S_IWUSR:
                # Checked here rather than left to open(): os.replace ignores the file's own
                # mode, and root ignores it altogether; a read-only file means "do not write".
                raise PermissionError(
                    errno.EACCES,
                    "The token file is read-only (no owner write permission); tokens are "
                    "not saved to it",
                    str(self.path),
                )
            data = file.read(_MAX_FILE_BYTES + 1)
        return _parse(data, self.path, quiet=for_update)

    def _update(self, change: Callable[[_Tokens], bool], left: threading.Event) -> None:
        """Read the file, apply ``change``, and write it back, under the write lock; give
        up, writing nothing, once ``left`` is set (the caller has gone)."""
        _make_private_dirs(self.path.parent)
        _check_lock_file(self._write_lock_path)
        write_lock = _new_lock(self._write_lock_path)
        deadline = time.monotonic() + _WRITE_LOCK_TIMEOUT
        # Short tries rather than one long wait: an abandoned thread stops within one.
        while not _try_lock(write_lock):
            if left.is_set():
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Another process held {self._write_lock_path} for over "
                    f"{_WRITE_LOCK_TIMEOUT:.0f} s; if no process is writing, remove the file."
                )
            time.sleep(0.005)
        try:
            if left.is_set():
                return  # the caller gave up before the file was ours: write nothing
            tokens = self._read(for_update=True)
            if not change(tokens):
                return
            now = time.time()
            fresh = {
                k: v
                for k, v in tokens.items()
                if isinstance(v, dict) and _is_number(v.get("expires")) and v["expires"] > now
            }
            self._write({"version": _FORMAT_VERSION, "tokens": fresh})
            self._remove_stale_temporaries(now)
        finally:
            write_lock.release()

    def _remove_stale_temporaries(self, now: float) -> None:
        """Delete temporary files left by writers killed between mkstemp and the rename.

        Every writer holds the write lock, which we hold now, so such a file is an orphan;
        the age check only guards against a clock or file system that disagrees. It runs
        once per write (once per token lifetime), so a directory listing costs nothing.
        """
        for tmp in self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                if now - tmp.lstat().st_mtime > _STALE_TEMPORARY_AGE:
                    tmp.unlink()
                    _logger().info("Token store: removed %s, left by a writer that was killed", tmp)

    def _write(self, document: dict[str, Any]) -> None:
        import tempfile  # here: it costs the cached-token path ~2 ms (shutil and more)

        data = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        # mkstemp creates the file 0600 with O_EXCL, in the target's directory so the
        # rename below is atomic (same file system).
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                # Without fsync a crash right after the rename can leave an empty file on
                # some file systems; cheap at one write per token lifetime.
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class _FetchLock:
    """An exclusive ``flock`` on one lock file, taken without blocking the event loop."""

    def __init__(self, store: FileTokenStore, path: Path) -> None:
        self._store = store
        self._path = path
        self._lock: BaseFileLock | None = None

    async def __aenter__(self) -> None:
        store = self._store
        clock = store.clock
        # A fresh lock object per hold: flock excludes separate open files even inside one
        # process, so two clients (or threads) of this process exclude each other too,
        # which filelock's per-object re-entrancy would not.
        lock = _new_lock(self._path)
        deadline = clock.monotonic() + store.lock_timeout
        while not await self._try(lock):
            if clock.monotonic() >= deadline:
                raise TimeoutError(
                    f"Waited {store.lock_timeout:.0f} s for another process's token fetch "
                    f"(lock {self._path}); fetching without it."
                )
            # Polling keeps the wait cancellable; a thread blocked in flock() could not be
            # cancelled and would take the lock after its caller had gone.
            await clock.sleep(store.poll_interval * random.uniform(0.5, 1.5))  # noqa: S311
        self._lock = lock

    async def _try(self, lock: BaseFileLock) -> bool:
        """One try for the lock in a worker thread that a cancelled caller abandons."""
        import anyio

        # Whichever of the caller and the thread ends last releases a lock taken after the
        # caller left (a slow file system), decided under this guard.
        guard = threading.Lock()
        holding = left = False

        def attempt() -> bool:
            nonlocal holding
            acquired = _try_acquire(lock, self._path)
            with guard:
                holding = acquired
                gone = left
            if gone and acquired:
                lock.release()
            return acquired

        try:
            return await anyio.to_thread.run_sync(attempt, abandon_on_cancel=True)
        except BaseException:
            with guard:
                left = True
                taken = holding
            if taken:
                lock.release()  # taken just before the cancellation: no one holds it
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            # Unlocking and closing a descriptor does not block, so it runs here, where a
            # cancelled caller cannot skip it.
            lock.release()


def _new_lock(path: Path) -> BaseFileLock:
    # Imported here: filelock costs ~70 ms to import, and most programs never use this store.
    import filelock

    # thread_local=False: anyio may acquire in one worker thread and release in another.
    return filelock.FileLock(str(path), mode=0o600, thread_local=False)


def _try_acquire(lock: BaseFileLock, path: Path) -> bool:
    _make_private_dirs(path.parent)
    _check_lock_file(path)
    return _try_lock(lock)


def _try_lock(lock: BaseFileLock) -> bool:
    import filelock

    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return False
    return True


def _token_path(path: object) -> Path:
    """The absolute token file path that ``path`` names, or ConfigurationError."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else path
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError(
            "FileTokenStore needs the path of a token file as a string, such as "
            f"'~/.cache/entur-oauth/tokens.json', not {path!r}."
        )
    if "\x00" in text:
        raise ConfigurationError(f"The FileTokenStore path {text!r} holds a NUL character.")
    resolved = Path(os.path.abspath(os.path.expanduser(text)))
    if not resolved.name or text.endswith(os.sep):
        raise ConfigurationError(
            f"The FileTokenStore path {text!r} names a directory; give a file in it, such "
            f"as {os.path.join(text, 'tokens.json')!r}."
        )
    return resolved


def _make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each mode 0700 whatever the umask."""
    missing: list[Path] = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        try:
            new.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made by another process meanwhile: its mode is its own
        # mkdir's mode is filtered by the umask, which may also take the owner's bits.
        os.chmod(new, 0o700)


def _check_token_file(st: os.stat_result, path: Path) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise _unsafe(path, "is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise _unsafe(path, "is not a regular file")
    if st.st_uid != os.geteuid():
        raise _unsafe(path, f"belongs to another user (uid {st.st_uid})")
    if st.st_mode & 0o077:
        raise ConfigurationError(
            f"The token file {path} has mode {stat.S_IMODE(st.st_mode):04o}: group or "
            f"others may read or write it. Run 'chmod 600 {path}' (or delete it; it is "
            "recreated with mode 0600)."
        )


def _check_lock_file(path: Path) -> None:
    # filelock opens lock files with O_CREAT (and, in older versions, O_TRUNC): a symlink
    # planted in their place could make us truncate another file.
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise _unsafe(path, "is not a regular file (a symbolic link?)")
    if st.st_uid != os.geteuid():
        raise _unsafe(path, f"belongs to another user (uid {st.st_uid})")


def _unsafe(path: Path, problem: str) -> ConfigurationError:
    return ConfigurationError(
        f"Refusing the token file {path}: it {problem}. Point FileTokenStore at a regular "
        "file of your own, in a directory only you can write."
    )


def _parse(data: bytes, path: Path, *, quiet: bool) -> _Tokens:
    if not data.strip():
        return {}  # a new, empty file (e.g. made with 'install -m 600 /dev/null')
    problem = None
    if len(data) > _MAX_FILE_BYTES:
        problem = f"over {_MAX_FILE_BYTES} bytes"
    else:
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            problem = "not valid JSON (truncated or corrupt)"
        else:
            if (
                not isinstance(document, dict)
                or document.get("version") != _FORMAT_VERSION
                or not isinstance(document.get("tokens"), dict)
            ):
                problem = "not a version 1 token file"
            else:
                tokens: _Tokens = document["tokens"]
                return tokens
    # Writers log quietly: they are the repair, and the reader has already warned.
    (_logger().debug if quiet else _logger().warning)(
        "token file %s is %s; treating it as empty (the next saved token rewrites it)",
        path,
        problem,
    )
    return {}


def _entry_value(entry: object, path: Path) -> bytes | None:
    """Return the sealed bytes of one entry, or ``None`` if the entry is malformed."""
    if (
        isinstance(entry, dict)
        and isinstance(entry.get("value"), str)
        and _is_number(entry.get("expires"))
    ):
        try:
            return base64.b64decode(entry["value"], validate=True)
        except (binascii.Error, ValueError):
            pass
    _logger().warning("token file %s has a malformed entry; ignoring it", path)
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
