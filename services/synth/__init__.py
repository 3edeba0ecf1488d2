"""Synthetic point-of-sale histories with a known (latent) churn process.

Used by the demo feed, by tests and by ``churnwatch train`` experiments: every generated
event follows the contract schema, and every customer's true churn time is returned beside
the events so that models can be checked against the truth.
"""

from services.synth.generator import (
    PRESETS,
    SynthCustomer,
    SynthError,
    generate,
    write_ndjson,
    write_truth,
)

__all__ = ["PRESETS", "SynthCustomer", "SynthError", "generate", "write_ndjson", "write_truth"]
