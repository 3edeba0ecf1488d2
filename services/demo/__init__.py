"""The demo POS feed that ``churnwatch up`` runs next to the stack: see :mod:`services.demo.feed`.

(Nothing is imported here, so ``python -m services.demo.feed`` runs without a double import.)
"""
