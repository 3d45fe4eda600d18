"""The suite's own layout: a test that starts a process or a server is marked ``slow`` (nox
runs those once per ``nox``, the rest on every Python), by its fixtures or by hand, and an
unmarked one that starts one fails."""

from __future__ import annotations

import socket
import subprocess

import pytest

from entur_oauth.testing import FakeEntur

from .conftest import GUARD, UnmarkedSlowTestError


def test_an_unmarked_test_may_start_no_process_and_no_server() -> None:
    """Starting a process or listening on a socket raises, naming the test and the mark."""
    with pytest.raises(UnmarkedSlowTestError, match=r"starts a process .*@pytest\.mark\.slow"):
        subprocess.run(["true"], check=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # binding alone (a port number to refuse) is allowed
        with pytest.raises(UnmarkedSlowTestError, match=r"listens on .*@pytest\.mark\.slow"):
            sock.listen()
    assert len(GUARD.caught) == 2
    GUARD.caught.clear()  # refused on purpose: the test passes


def test_a_test_using_a_server_fixture_is_marked_slow(
    request: pytest.FixtureRequest, loopback_fake: tuple[FakeEntur, str]
) -> None:
    """``loopback_fake`` (uvicorn) marks its user ``slow`` at collection, and lets it serve."""
    assert request.node.get_closest_marker("slow") is not None
    assert loopback_fake[1].startswith("http://127.0.0.1:")


@pytest.mark.slow
def test_a_marked_test_may_start_a_process() -> None:
    """With the mark, processes are allowed."""
    assert subprocess.run(["true"], check=False).returncode == 0
