"""Plan a trip with Journey Planner, an open Entur API: no credentials, only ET-Client-Name.

It shows an open-API client (``client_id=None, client_secret=None``: no token is ever
fetched) and a GraphQL query to ``/journey-planner/v3/graphql``, with GraphQL errors
reported as such.

Run it against Entur (no account needed)::

    export ENTUR_CLIENT_NAME=acme-example   # '<company>-<application>'
    python journey_planner.py NSR:StopPlace:59872 NSR:StopPlace:548

(in this file's folder, or wherever you copied it: Oslo S to Bergen stasjon; find other
stop ids with ``geocoder.py``.)
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


TRIP_QUERY = """
query Trip($from: Location!, $to: Location!) {
  trip(from: $from, to: $to, numTripPatterns: 3) {
    tripPatterns {
      expectedStartTime
      expectedEndTime
      duration
      legs {
        mode
        line { publicCode name }
        fromPlace { name }
        toPlace { name }
      }
    }
  }
}
"""


async def plan(origin: str, destination: str) -> list[dict[str, Any]]:
    """Return the trip patterns from ``origin`` to ``destination`` (NSR stop place ids)."""
    # Open API: no client id or secret, even if ENTUR_CLIENT_ID happens to be set.
    async with EnturClient.from_env(client_id=None, client_secret=None) as entur:
        response = await entur.post(
            "/journey-planner/v3/graphql",
            json={
                "query": TRIP_QUERY,
                "variables": {"from": {"place": origin}, "to": {"place": destination}},
            },
        )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    if result.get("errors"):
        raise RuntimeError(f"Journey Planner answered with errors: {result['errors']}")
    patterns: list[dict[str, Any]] = result["data"]["trip"]["tripPatterns"]
    return patterns


async def main(origin: str, destination: str) -> None:
    for pattern in await plan(origin, destination):
        legs = ", ".join(
            f"{leg['mode']} {(leg.get('line') or {}).get('publicCode') or ''}".strip()
            + f" {leg['fromPlace']['name']} -> {leg['toPlace']['name']}"
            for leg in pattern["legs"]
        )
        minutes = int(pattern["duration"]) // 60
        print(f"{pattern['expectedStartTime']}  {minutes // 60} h {minutes % 60:02d} min  {legs}")


if __name__ == "__main__":
    args = sys.argv[1:]
    origin = args[0] if args else "NSR:StopPlace:59872"  # Oslo S
    destination = args[1] if len(args) > 1 else "NSR:StopPlace:548"  # Bergen stasjon
    require_client_name("journey_planner.py")
    try:
        anyio.run(main, origin, destination)
    except ConfigurationError as exc:  # a wrong ENTUR_* variable: say which
        sys.exit(f"journey_planner.py: {exc}")
