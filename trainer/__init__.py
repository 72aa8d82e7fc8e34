"""MetaSemi trainer: the algorithm, its ablations, models and datasets, runnable alone."""

from trainer.config import Config, ConfigError

__all__ = ["Config", "ConfigError", "ReportHook", "TrainingDiverged", "resolve", "train"]


def __getattr__(name: str):
    # Loaded when asked for: a reader of run files (the analysis) imports trainer.config
    # or trainer.rundir without torch, which the loop and the settings bring.
    if name in ("ReportHook", "TrainingDiverged", "train"):
        from trainer import loop

        return getattr(loop, name)
    if name == "resolve":
        from trainer.settings import resolve

        return resolve
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
