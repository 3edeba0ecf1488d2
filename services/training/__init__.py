"""``churnwatch train``: point-in-time snapshots from historical events, time-ordered model
selection, calibration and a held-out evaluation against simple baselines."""

from services.training.exceptions import TrainingError
from services.training.train import TrainReport, train

__all__ = ["TrainReport", "TrainingError", "train"]
