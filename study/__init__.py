"""The study: Ray Tune trials of the trainer, searched by Optuna (python study/run.py).

From Python: `from study import run_study` (study/api.py).
"""

__all__ = ["StudyError", "StudyOptions", "StudyResult", "run_study"]


def __getattr__(name: str):
    # Loaded when asked for: a trial's worker imports study.trainable alone, not the CLI.
    if name in ("run_study", "StudyResult"):
        from study import api

        return getattr(api, name)
    if name == "StudyError":
        from study.errors import StudyError

        return StudyError
    if name == "StudyOptions":
        from study.driver import StudyOptions

        return StudyOptions
    raise AttributeError(f"module 'study' has no attribute {name!r}")
