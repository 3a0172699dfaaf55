#!/usr/bin/env python3
"""What an instrumented app makes of a `baggage` header: OpenTelemetry Python's W3C baggage
propagator extracts it, and re-injects it as the app would on its outbound calls.

stdin: a JSON array of header values. stdout: a JSON array, one object per value:
{"members": {name: value, ...}, "reinjected": "<baggage header the app sends on>" or null}.
"""
import json
import sys

try:
    from opentelemetry import baggage
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
except ImportError:
    sys.exit("opentelemetry-api is not installed: pip install opentelemetry-api "
             "(scripts/test installs the version it pins)")

propagator = W3CBaggagePropagator()
views = []
for header in json.load(sys.stdin):
    context = propagator.extract({"baggage": header})
    outbound = {}
    propagator.inject(outbound, context)
    views.append({
        "members": {k: str(v) for k, v in baggage.get_all(context).items()},
        "reinjected": outbound.get("baggage"),
    })
json.dump(views, sys.stdout)
