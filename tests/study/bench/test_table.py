"""The tabular benchmark's file: written atomically, read back as arrays, cut to a sub-grid."""

import gzip
import json

import numpy as np
import pytest

from study.bench.table import grid_configs, read_table, write_subtable
from tests.study.bench.tables import GRID, SEEDS, STEPS, write


def test_a_table_reads_back_as_configuration_by_seed_by_evaluation(tmp_path):
    table = read_table(str(write(tmp_path / "t.json.gz", diverge={(2, 8790)})))
    assert len(table.configs) == 6 and table.seeds == SEEDS
    assert table.val_accuracy.shape == (6, 4, len(STEPS)) and table.full_steps == 600
    assert table.configs[table.defaults_index] == {"weight": 1.0, "lr": 0.1, "alpha": 1.0,
                                                   "warmup": 100}
    assert table.diverged[2, 2] and table.diverged.sum() == 1
    assert table.end_step[2, 2] == 250 and np.isnan(table.val_accuracy[2, 2, 4:]).all()
    errors = table.final_test_error()
    assert errors[2, 2] == pytest.approx(0.9)  # a diverged run counts as chance
    assert errors[0, 0] == pytest.approx(1 - table.test_accuracy[0, 0, -1])


def test_a_table_with_a_run_missing_is_refused_naming_the_fix(tmp_path):
    path = write(tmp_path / "t.json.gz")
    body = json.loads(gzip.open(path).read())
    body["runs"] = body["runs"][1:]
    with gzip.open(path, "wt") as f:
        json.dump(body, f)
    with pytest.raises(ValueError, match="1 of 24 runs are missing; record the table again"):
        read_table(str(path))


def test_a_subtable_keeps_the_runs_on_the_levels_asked_for(tmp_path):
    full = read_table(str(write(tmp_path / "t.json.gz")))
    write_subtable(str(tmp_path / "t.json.gz"), str(tmp_path / "s.json.gz"),
                   {"weight": [1.0, 3.0]})
    sub = read_table(str(tmp_path / "s.json.gz"))
    assert sub.configs == grid_configs({**{k: tuple(v) for k, v in GRID.items()},
                                        "weight": (1.0, 3.0)})
    for i, config in enumerate(sub.configs):
        j = full.index_of(config)
        assert np.array_equal(sub.val_accuracy[i], full.val_accuracy[j])
