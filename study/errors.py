"""The study's error for bad input, at the bottom of the study: every part may raise it."""


class StudyError(ValueError):
    """Bad study input, found before any trial starts; the message names the fix."""
