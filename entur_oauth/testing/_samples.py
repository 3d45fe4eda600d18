"""Canned open-API answers for ``FakeEntur(samples=True)``, shaped like Entur's."""

from __future__ import annotations

from typing import Any

from ._asgi import RecordedRequest, ScriptedResponse

__all__ = ["autocomplete", "journey_planner"]


_STOPS = (
    ("NSR:StopPlace:59872", "Oslo S", "Oslo", 10.753276, 59.910925),
    ("NSR:StopPlace:548", "Bergen stasjon", "Bergen", 5.332494, 60.390466),
    ("NSR:StopPlace:41742", "Trondheim S", "Trondheim", 10.399123, 63.436279),
)


def autocomplete(request: RecordedRequest) -> ScriptedResponse:
    """Answer ``/geocoder/v1/autocomplete`` like Entur's geocoder (GeoJSON), from three stops."""
    text = request.params.get("text", "").strip().lower()
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {
                "id": stop_id,
                "gid": f"openstopplace:venue:{stop_id}",
                "layer": "venue",
                "source": "openstopplace",
                "name": name,
                "label": f"{name}, {locality}",
                "locality": locality,
                "category": ["railStation"],
            },
        }
        for stop_id, name, locality, lon, lat in _STOPS
        if text and text in name.lower()
    ]
    return ScriptedResponse(
        200,
        json={
            "geocoding": {"query": {"text": text}},
            "type": "FeatureCollection",
            "features": features,
        },
    )


def journey_planner(request: RecordedRequest) -> ScriptedResponse:
    """Answer Journey Planner's GraphQL endpoint: ``serverInfo`` and ``trip`` queries.

    A query naming ``serverInfo`` gets a version; one naming ``trip`` (or neither) gets one
    trip pattern of one rail leg.
    """
    try:
        document = request.json()
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("query"), str):
        return ScriptedResponse(400, json={"errors": [{"message": "Expected a GraphQL query"}]})
    query: str = document["query"]
    data: dict[str, Any] = {}
    if "serverInfo" in query:
        data["serverInfo"] = {"version": "fake-entur", "otpVersion": "2.x"}
    if "trip" in query or not data:
        data["trip"] = {"tripPatterns": [_TRIP_PATTERN]}
    return ScriptedResponse(200, json={"data": data})


_LEG = {
    "mode": "rail",
    "distance": 462000.0,
    "line": {"publicCode": "F4", "name": "Oslo S - Bergen"},
    "fromPlace": {"name": "Oslo S"},
    "toPlace": {"name": "Bergen stasjon"},
    "expectedStartTime": "2030-01-02T08:25:00+01:00",
    "expectedEndTime": "2030-01-02T15:20:00+01:00",
}
_TRIP_PATTERN = {
    "expectedStartTime": _LEG["expectedStartTime"],
    "expectedEndTime": _LEG["expectedEndTime"],
    "duration": 24900,
    "legs": [_LEG],
}
