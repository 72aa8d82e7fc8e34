"""Small tables in the recorded format, built from controlled numbers (no training)."""

from __future__ import annotations

import numpy as np

from study.bench.table import write_table

GRID = {"weight": [0.3, 1.0, 3.0], "lr": [0.03, 0.1], "alpha": [1.0], "warmup": [100]}
SEEDS = [8788, 8789, 8790, 8791]
STEPS = list(range(50, 601, 50))


def quality(config: dict) -> float:
    """The true final validation accuracy of a configuration: best at weight 3, lr 0.1."""
    return 0.80 + 0.05 * np.log10(config["weight"] / 0.3) + 0.3 * (config["lr"] - 0.03)


def write(path, noise: float = 0.01, seed: int = 0, diverge=()):
    """A table of GRID x SEEDS: accuracy rising to each configuration's quality plus noise,
    test accuracy alike; 0.5 trainer seconds per 50 steps; `diverge`: (config index, seed)
    runs that stop at step 250 on a NaN loss."""
    from study.bench.table import grid_configs

    rng = np.random.default_rng(seed)
    runs = []
    for i, config in enumerate(grid_configs({k: tuple(v) for k, v in GRID.items()})):
        for s in SEEDS:
            q = quality(config) + rng.normal(0, noise)
            rows = []
            for j, step in enumerate(STEPS):
                acc = q * (1 - 0.5 * np.exp(-step / 150)) + rng.normal(0, noise)
                rows.append({"step": step, "val_accuracy": float(acc), "val_loss": 1 - acc,
                             "test_accuracy": float(acc + rng.normal(0, noise)),
                             "test_loss": 1 - acc, "elapsed_seconds": 0.5 * (j + 1)})
            status, steps = "completed", 600
            if (i, s) in diverge:
                rows, status, steps = rows[:4], "diverged", 250
            runs.append({"config_index": i, "seed": s, "status": status, "steps": steps,
                         "seconds": rows[-1]["elapsed_seconds"] + (0.3 if steps < 600 else 0),
                         "rows": rows})
    meta = {"space": "digits", "grid": GRID, "seeds": SEEDS, "eval_steps": STEPS,
            "defaults": {"weight": 1.0, "alpha": 1.0, "lr": 0.1, "warmup": 100},
            "num_classes": 10, "command": "tests", "commit": "tests"}
    write_table(str(path), meta, runs)
    return path
