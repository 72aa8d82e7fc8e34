"""The paper's reference numbers, read from paper.toml (the one place they are written)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass

PAPER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper.toml")


@dataclass(frozen=True)
class Setting:
    """A reproduction setting: a dataset at a label count, and the paper's errors (%) there."""

    dataset: str
    name: str
    num_label: int
    metasemi: float | None
    fully_supervised: float | None


@dataclass(frozen=True)
class Paper:
    settings: tuple[Setting, ...]
    ablation: dict[str, dict[str, float]]  # method -> dataset -> error (%)

    def setting(self, dataset: str, num_label: int) -> Setting | None:
        return next((s for s in self.settings
                     if s.dataset == dataset and s.num_label == num_label), None)


def load_paper(path: str = PAPER_FILE) -> Paper:
    """Read the reference numbers; a malformed file names what is wrong."""
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    try:
        settings = tuple(
            Setting(dataset, s["name"], int(s["num_label"]), s.get("metasemi"),
                    s.get("fully_supervised"))
            for dataset, s in raw["settings"].items())
        ablation = {method: {d: float(e) for d, e in errors.items()}
                    for method, errors in raw["ablation"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: malformed reference numbers ({type(e).__name__}: {e})") from e
    return Paper(settings, ablation)
