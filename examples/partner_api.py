"""Call a partner API with the extra headers partner APIs ask for.

Sales and other partner APIs want to know where a request comes from: ``Entur-POS`` (the
point of sale) and ``Entur-Distribution-Channel`` are the same on every call, so they are
client-wide ``headers``; ``X-Correlation-Id`` is new per call, so it goes on the request.
The client adds ``ET-Client-Name`` and the bearer token itself.

Run it against Entur (staging here) with a client that has access to the partner API::

    export ENTUR_CLIENT_ID=... ENTUR_CLIENT_SECRET=... ENTUR_CLIENT_NAME=acme-example
    export ENTUR_ENVIRONMENT=staging
    export ENTUR_POS=acme-web ENTUR_DISTRIBUTION_CHANNEL=ENT:DistributionChannel:Web
    python partner_api.py /sales/v1/some/endpoint

(in this file's folder, or wherever you copied it). A 403 means the token is fine but the
client lacks access to that API: ask Entur.
"""

from __future__ import annotations

import os
import sys
import uuid

import anyio

from entur_oauth import ConfigurationError, EnturClient, ForbiddenError


async def main(path: str) -> int:
    entur = EnturClient.from_env(
        headers={
            "Entur-POS": os.environ.get("ENTUR_POS", "acme-web"),
            "Entur-Distribution-Channel": os.environ.get(
                "ENTUR_DISTRIBUTION_CHANNEL", "ENT:DistributionChannel:Web"
            ),
        },
        timeout=20.0,
    )
    async with entur:
        correlation_id = str(uuid.uuid4())  # quote it when you ask Entur about this call
        try:
            response = await entur.get(path, headers={"X-Correlation-Id": correlation_id})
        except ForbiddenError as exc:
            print(f"403: {exc}", file=sys.stderr)
            return 1
    print(f"HTTP {response.status_code} (X-Correlation-Id: {correlation_id})")
    print(response.text)
    return 0 if response.is_success else 1


if __name__ == "__main__":
    try:
        sys.exit(
            anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "/personalisation/v1/programs/1")
        )
    except ConfigurationError as exc:  # a missing or wrong ENTUR_* variable: say which
        sys.exit(f"partner_api.py: {exc}")
