"""Ingestion: ``POST /v1/events`` (``routes.py``), batch validation (``intake.py``) and the
Kafka publisher (``publisher.py``). Nothing else: the query and admin API is ``services/api``.
"""
