"""The query and admin HTTP API: customer risk and timelines, the at-risk list, analytics,
win-back actions and alert acknowledgements, profiles, webhook subscriptions, pseudonym admin,
erasure and export, pipeline status. Response schemas in ``schemas.py``.

Ingestion (``POST /v1/events``) is ``services/ingest``; ``services/server/app.py`` composes both
(and the console) into one app.
"""
