"""HTTP plumbing the routers of the one FastAPI app share (ingest, api, console): the request
resources and API-key dependencies (``deps``), the store-scope rule (``scope``), request
middleware and error bodies, OpenAPI helpers, path parameters, rate limits, CSV answers and the
app's Prometheus registry (``metrics``).

A library, not a service: it imports no service package. ``services/server/app.py`` composes the
routers into the app.
"""
