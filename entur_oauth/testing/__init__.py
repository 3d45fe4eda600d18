"""Test kit: a fake Entur for your own tests, in-process or on a loopback port, and a fake clock.

Test your Entur code (retries, error handling, token reuse) without credentials, network
or sleeps. The pytest fixtures below are registered automatically when entur-oauth is
installed (a ``pytest11`` plugin); everything also works without pytest.

:class:`FakeEntur` is an ASGI app that plays Entur:

* ``POST /oauth/token`` validates the JSON body the way Entur's Auth0 tenant does (wrong
  id or secret: 401 ``access_denied``; other audience: 403) and issues JWT-shaped tokens
  with ``exp``, valid for ``expires_in`` seconds of its clock.
* Every other path is the API: it wants ``ET-Client-Name`` (else 400) and a valid bearer
  token (else 401), except under ``open_paths`` (``/geocoder``, ``/journey-planner``); paths
  under ``forbidden_paths`` (``/forbidden``) answer 403. It answers with an echo,
  ``{"path", "client_name", "authenticated"}``; :meth:`FakeEntur.route` sets your own
  answers, and ``FakeEntur(samples=True)`` gives Journey Planner's GraphQL endpoint and the
  geocoder's autocomplete small answers shaped like Entur's.

What a test can do with it:

* count and inspect: ``fake.token_count``; ``fake.token_requests`` and ``fake.api_requests``
  hold every request as a :class:`RecordedRequest` (method, path, query, headers, body);
  ``fake.all_issued_tokens`` lists every token handed out (for leak checks);
* script failures: ``fake.fail_token(503, times=3)``, ``fake.fail_api(429, retry_after=2)``,
  or ``fake.fail_api(ScriptedResponse(...))`` for any status, headers, body, ``delay`` or
  ``hang``; a client built with a wrong secret sees Entur's own rejection;
* slow answers: ``fake.delay_api(1.5)`` / ``fake.delay_token(1.5)`` answer normally, late
  (in-process on the fake's clock, so a :class:`FakeClock` needs no real waiting; served
  on a port, in real time);
* expiry: ``fake.revoke_all()`` makes issued tokens invalid (the API answers 401);
  ``FakeEntur(expires_in=60)`` issues short-lived tokens; ``FakeEntur(clock=clock)`` with a
  :class:`FakeClock` shared with the client expires them on ``clock.advance(86400)``
  instead of a sleep;
* answers: ``fake.route(path, json=...)`` (or a function of the request) for your own;
* connect: ``fake.client()`` is an :class:`EnturClient` wired in-process (no sockets);
  ``with fake.serve() as url:`` runs the fake on a real loopback port (uvicorn, or a small
  built-in server when uvicorn is not installed); ``fake.env(url)`` gives the ``ENTUR_*``
  variables for ``EnturClient.from_env()`` or a subprocess.

pytest fixtures (function scope):

* ``entur_clock``: a :class:`FakeClock` with ``autojump=True`` (retry back-offs pass at once).
* ``entur_fake``: a :class:`FakeEntur` on that clock.
* ``entur_client``: an :class:`EnturClient` wired to ``entur_fake`` in-process.
* ``entur_fake_url``: ``entur_fake`` served on a loopback port; its base URL.
* ``entur_env``: the ``ENTUR_*`` variables set to point at ``entur_fake_url``, so code that
  calls ``EnturClient.from_env()`` talks to the fake.

Example::

    async def test_retries_once_on_401(entur_fake, entur_client):
        async with entur_client:
            await entur_client.get("/x")
            entur_fake.revoke_all()
            assert (await entur_client.get("/x")).status_code == 200
        assert entur_fake.token_count == 2

Each fake has a random client secret by default. Tokens in the process-wide token store are
sealed with the secret, so a client of one fake never picks up a token another fake issued
(a stale token would cost a 401 and skew ``token_count``), and a leak check can search
output for the secret.
"""

from .._fakeclock import FakeClock
from ._asgi import RecordedRequest, ScriptedResponse
from ._fake import FakeEntur

__all__ = ["FakeClock", "FakeEntur", "RecordedRequest", "ScriptedResponse"]
