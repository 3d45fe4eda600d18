"""A FastAPI back end that calls Entur: one shared EnturClient for the whole app.

It shows the pattern for web apps: the client is created once in the lifespan (so every
request reuses its connections and its token), handed to endpoints by a dependency, and
closed on shutdown; Entur errors become sensible HTTP answers (502/503) for your callers,
which never see how the back end's own credentials are set up (that detail is logged).

Run it against Entur (staging here) with a client from Entur Partner
(``pip install fastapi uvicorn``)::

    export ENTUR_CLIENT_ID=... ENTUR_CLIENT_SECRET=... ENTUR_CLIENT_NAME=acme-example
    export ENTUR_ENVIRONMENT=staging
    uvicorn fastapi_backend:app --port 8000   # in this file's folder, or wherever you copied it
    curl 'http://127.0.0.1:8000/stops?text=Oslo'
    curl 'http://127.0.0.1:8000/entur/personalisation/v1/programs/1'
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypedDict

from fastapi import Depends, FastAPI, HTTPException, Request

from entur_oauth import APIError, EnturClient, TokenRequestError

#: Checked when uvicorn imports the app, so a missing variable stops it with one line
#: instead of a traceback from the lifespan.
MISSING = [
    name
    for name in ("ENTUR_CLIENT_ID", "ENTUR_CLIENT_SECRET", "ENTUR_CLIENT_NAME")
    if not os.environ.get(name, "").strip()
]
if MISSING:
    sys.exit(f"fastapi_backend.py: set {', '.join(MISSING)} (see the file's docstring).")


logger = logging.getLogger("fastapi_backend")


class State(TypedDict):
    entur: EnturClient


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[State]:
    # One client for the app's lifetime: one token, one connection pool, for all requests.
    async with EnturClient.from_env() as entur:
        yield {"entur": entur}
    print("EnturClient closed", file=sys.stderr, flush=True)


def get_entur(request: Request) -> EnturClient:
    """The shared client, from the lifespan state."""
    entur: EnturClient = request.state.entur
    return entur


Entur = Annotated[EnturClient, Depends(get_entur)]

app = FastAPI(title="acme back end", lifespan=lifespan)


@app.get("/stops")
async def stops(text: str, entur: Entur) -> list[dict[str, str]]:
    """Stops matching ``text``, from Entur's geocoder."""
    response = await entur.get("/geocoder/v1/autocomplete", params={"text": text, "size": 5})
    response.raise_for_status()
    return [
        {"id": f["properties"]["id"], "label": f["properties"]["label"]}
        for f in response.json()["features"]
    ]


@app.get("/entur/{path:path}")
async def entur_proxy(path: str, entur: Entur) -> Any:
    """Any partner API GET, with the token added; Entur's errors mapped for our callers."""
    try:
        response = await entur.get(f"/{path}")
    except TokenRequestError:
        # Our credentials or Entur's token endpoint: not the caller's fault, and none of the
        # caller's business (the message names the token URL and our settings): log the
        # detail for us, answer the caller in general terms.
        logger.exception("Entur authentication failed")
        raise HTTPException(503, "Entur is unavailable; try again later") from None
    except APIError as exc:  # 401/403/408 after the client's own retry
        raise HTTPException(502, f"Entur answered {exc.status_code}") from None
    if response.status_code >= 400:
        raise HTTPException(502, f"Entur answered {response.status_code}")
    return response.json()


@app.get("/health")
async def health() -> dict[str, str]:
    """Liveness: answers without calling Entur."""
    return {"status": "ok"}
