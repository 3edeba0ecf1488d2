"""Alert state the notifier and the HTTP API share: alert records and acknowledgements
(``acks``), pending escalations (``escalation``), webhook subscriptions and their target
checks (``webhooks``), and the risk-change record they all read (``inbound``).

A library, not a service: the notifier *runs* alerts, the API *answers* about them, and neither
imports the other's package (tests/unit/test_import_graph.py).
"""
