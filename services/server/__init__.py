"""The HTTP process: ``app.py`` composes ingestion (``services/ingest``), the query and admin API
(``services/api``) and the staff console (``services/console``) into one FastAPI app;
``main.py`` runs it with uvicorn (``churnwatch api``).

A composition root like ``services/cli``: the only packages besides the CLI that import
several services.
"""
