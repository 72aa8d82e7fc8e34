"""A search trial trains what its reproduction trains: length, warm-up and milestones (no
Ray started: the settings each trial resolves, from the driver's base and the trainable)."""

from study.driver import StudyOptions, trial_base
from study.spaces import load_space
from study.trainable import trial_settings
from trainer.settings import resolve

CONFIG = {"weight": 0.5, "alpha": 0.3, "lr": 0.2, "warmup": 137}
PER_TRIAL = {"cpu": 1.0, "gpu": 0.0}


def schedules(space_path: str, **options):
    """(steps, warm-up, milestones) of a search trial, a race trial and the tuned reproduce
    run of CONFIG, and the seeds they train on."""
    space = load_space(space_path)
    search = trial_base(StudyOptions(space=space_path, name="s", **options), space, PER_TRIAL)
    reproduce = trial_base(StudyOptions(space=space_path, name="s-reproduce", mode="reproduce",
                                        best_config=CONFIG, **options), space, PER_TRIAL)
    runs = {"search": resolve(trial_settings(CONFIG, search)),
            "race": resolve(trial_settings({**CONFIG, "phase": "race", "entrant": "finalist-1",
                                            "seed": 8789}, search)),
            "reproduce": resolve(trial_settings({"variant": "tuned", "seed": 7788}, reproduce))}
    return ({k: (c.total_steps, c.warmup, c.milestones) for k, c in runs.items()},
            {k: c.seed for k, c in runs.items()})


def test_a_completed_search_trial_has_the_schedule_of_its_reproduce_run():
    shape, seeds = schedules("digits")
    assert shape["search"] == shape["race"] == shape["reproduce"] == (600, 137, (450,))
    assert seeds == {"search": 8788, "race": 8789, "reproduce": 7788}


def test_a_shorter_search_keeps_the_shape_and_the_race_and_reproduction_run_full_length(
        tmp_path):
    text = open(load_space("digits").path).read().replace(
        "[fidelity]\n", "[fidelity]\ntotal_steps = 300\n")
    path = tmp_path / "half.toml"
    path.write_text(text)
    shape, _ = schedules(str(path))
    assert shape["search"] == (300, 68, (225,))  # half of each step count
    assert shape["race"] == shape["reproduce"] == (600, 137, (450,))


def test_steps_per_trial_shortens_every_run_of_the_pipeline_alike():
    shape, _ = schedules("digits", total_steps=60)
    assert shape["search"] == shape["race"] == shape["reproduce"] == (60, 14, (45,))
