"""MetaSemi trainer: the algorithm, its ablations, models and datasets, runnable alone."""

from trainer.config import Config, ConfigError, resolve
from trainer.loop import ReportHook, TrainingDiverged, train

__all__ = ["Config", "ConfigError", "ReportHook", "TrainingDiverged", "resolve", "train"]
