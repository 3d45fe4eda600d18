"""Find stops and places by name with the geocoder's autocomplete, an open Entur API.

It shows an open-API client (no credentials, ``ET-Client-Name`` only) and a ``GET`` with
query parameters to ``/geocoder/v1/autocomplete``, whose answer is GeoJSON.

Run it against Entur (no account needed)::

    export ENTUR_CLIENT_NAME=acme-example   # '<company>-<application>'
    python geocoder.py "Oslo S"          # in this file's folder, or wherever you copied it
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio

from entur_oauth import ConfigurationError, EnturClient


def require_client_name(example: str) -> None:
    """Stop with one line when ENTUR_CLIENT_NAME is missing: an open API needs only that."""
    if not os.environ.get("ENTUR_CLIENT_NAME", "").strip():
        sys.exit(
            f"{example}: set ENTUR_CLIENT_NAME to '<company>-<application>', e.g. "
            "export ENTUR_CLIENT_NAME=acme-example (this open API needs no client id or secret)."
        )


async def autocomplete(text: str, *, size: int = 5) -> list[dict[str, Any]]:
    """Return up to ``size`` features (stops, addresses, places) matching ``text``."""
    async with EnturClient.from_env(client_id=None, client_secret=None) as entur:
        response = await entur.get(
            "/geocoder/v1/autocomplete", params={"text": text, "size": size, "lang": "no"}
        )
    response.raise_for_status()
    features: list[dict[str, Any]] = response.json()["features"]
    return features


async def main(text: str) -> None:
    features = await autocomplete(text)
    if not features:
        print(f"nothing found for {text!r}")
    for feature in features:
        properties = feature["properties"]
        lon, lat = feature["geometry"]["coordinates"]
        print(f"{properties['id']:<24} {properties['label']}  ({lat:.5f}, {lon:.5f})")


if __name__ == "__main__":
    require_client_name("geocoder.py")
    try:
        anyio.run(main, " ".join(sys.argv[1:]) or "Oslo S")
    except ConfigurationError as exc:  # a wrong ENTUR_* variable: say which
        sys.exit(f"geocoder.py: {exc}")
