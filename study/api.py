"""Studies from Python, as from the command line: `run_study("digits", num_samples=8)` runs
what `python study/run.py --space digits --num-samples 8` runs, with the same checks, and
returns the summary and the study directory.

Each keyword is a flag of study/run.py with its dashes as underscores (`python study/run.py
--help` lists them); True stands for a bare flag (`resume=True` is `--resume`), and None or
False leaves a flag out. Errors are raised, never printed: StudyError for what is refused
(with the command line's message), OSError for a disk or folder that fails, and
StudyInterrupted for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

from study.cli import build_parser, run_from_args
from study.errors import StudyError
from study.lock import StudyLocked
from study.spaces import SpaceError
from trainer.data import DatasetCorrupt


@dataclass(frozen=True)
class StudyResult:
    """What a study left: its summary (study_summary.json) and its directory. With
    then_reproduce, the reproduce study's."""

    summary: dict[str, Any]
    path: str


def study_argv(space: str, **options: Any) -> list[str]:
    """The study/run.py command line of these options; an unknown one is refused, named."""
    flags = {action.dest: action for action in build_parser()._actions}
    argv = ["--space", str(space)]
    for key, value in options.items():
        action = flags.get(key)
        if action is None or key == "help":
            close = sorted(k for k in flags if k != "help")
            raise StudyError(f"{key}: not an option of a study; the options are {close} "
                             "(python study/run.py --help says what each does)")
        flag = action.option_strings[-1]
        if value is None or value is False:
            continue
        if value is True and action.nargs == 0:
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


def run_study(space: str = "digits", **options: Any) -> StudyResult:
    """Run (or with resume=True, resume) a study of `space`; see the module docstring."""
    argv = study_argv(space, **options)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):  # argparse's own refusal: raised instead
            args = build_parser().parse_args(argv)
    except SystemExit:
        raise StudyError(said.getvalue().strip().splitlines()[-1]) from None
    try:
        summary = run_from_args(args)
    except (StudyLocked, SpaceError, DatasetCorrupt) as e:  # the CLI's refusals, one type
        raise StudyError(str(e)) from e
    return StudyResult(summary, summary["path"])
