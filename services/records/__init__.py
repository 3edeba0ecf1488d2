"""Customer records the HTTP API and the staff console share, free of HTTP: the reads (at-risk
lists, timelines, analytics populations, churn and tier history, win-back outcomes, exports) and
the writes that go with them (timeline appends, win-back actions, erasure). Functions raise
:mod:`services.records.errors`; the routes map them to HTTP answers.

A library, not a service: ``services/api`` and ``services/console`` both import it.
"""
