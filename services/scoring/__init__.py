"""The pure scoring library: activity, features, model, scorecard, rules and tiers.

No Redis, no Kafka, no service: the scorer, the API (``as_of`` reads, explanations) and
``churnwatch train`` all import it, so a feature or a tier means the same everywhere.
"""
