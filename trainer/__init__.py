"""MetaSemi trainer: the algorithm, its ablations, models and datasets, runnable alone."""

from trainer.config import Config, ConfigError
from trainer.loop import ReportHook, TrainingDiverged, train
from trainer.settings import resolve

__all__ = ["Config", "ConfigError", "ReportHook", "TrainingDiverged", "resolve", "train"]
