"""Ingestion: ``POST /v1/events`` and ingestion's own state (``routes.py``), batch validation
(``intake.py``), the Kafka publisher (``publisher.py``) and the ingest metrics (``metrics.py``).
Nothing else: the query and admin API is ``services/api``.
"""
