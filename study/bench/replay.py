"""The replay: a study's search strategies run against a recorded table (study/bench/table.py)
as a simulator with asynchronous workers and the recorded trainer seconds.

What runs is the study's own code: its Optuna searcher (StudySearch, PRUNED trials
included), its race (RaceSearch, study.race) and ASHA (RaceAwareASHA), called in the order
Ray Tune calls them. Only the training is replaced: a trial's evaluations are the table's
rows of its configuration and seed, each arriving when its trainer seconds have passed.

- Configurations: the searcher proposes values in the space's own ranges; each is snapped
  to the nearest level of the table's grid, parameter by parameter, on the parameter's
  scale (log or linear). TPE keeps its live settings; the objective it sees is constant
  over each cell of the grid, so proposals that land in a cell already tried replay the
  same run (counted as duplicates).
- Seeds: a study trains every search trial on one trainer seed and races on others. A
  replayed study of seed j uses the table's seed j mod R for its search and the next ones
  (cyclically) for its race; its sampler is seeded with j.
- Quality: a configuration's true error is its final test error averaged over the table's
  seeds; the regret of a pick is its true error minus the best configuration's.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from study.bench.table import Table
from study.driver import METRIC, MODE, chosen_trial, race_summary
from study.spaces import Space, load_space
from trainer.loop import selection_score


@dataclass(frozen=True)
class Strategy:
    """How a study searches: its sampler, early stopping, and what it does afterwards."""

    name: str
    sampler: str  # tpe | random
    asha: bool
    race: bool = False  # the race of study.race after the search
    short_top_k: bool = False  # train all a short while, then only the best k to the end
    tpe_options: tuple[tuple[str, bool], ...] = ()  # over study.search.TPE_OPTIONS

    def options(self) -> dict[str, bool] | None:
        if not self.tpe_options:
            return None
        from study.search import TPE_OPTIONS

        return {**TPE_OPTIONS, **dict(self.tpe_options)}


STRATEGIES = {s.name: s for s in (
    Strategy("random", "random", asha=False),
    Strategy("tpe", "tpe", asha=False),
    Strategy("random+asha", "random", asha=True),
    Strategy("tpe+asha", "tpe", asha=True),
    Strategy("tpe+asha+race", "tpe", asha=True, race=True),
    Strategy("random, top-k after a short budget", "random", asha=False, short_top_k=True),
)}


# --- selection signals ------------------------------------------------------------------------

def _val_score(table: Table) -> np.ndarray:
    """What the trainer reports as val_score (trainer.loop.selection_score), bit for bit."""
    out = np.full(table.val_accuracy.shape, np.nan)
    for c in range(out.shape[0]):
        for s in range(out.shape[1]):
            history: list[dict[str, float]] = []
            for e, acc in enumerate(table.val_accuracy[c, s]):
                if math.isnan(acc):
                    break
                history.append({"val_accuracy": float(acc)})
                out[c, s, e] = selection_score(history)
    return out


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    out = np.full(values.shape, np.nan)
    for e in range(values.shape[-1]):
        out[..., e] = np.nanmean(values[..., max(0, e - window + 1):e + 1], axis=-1)
    return out


# name -> (what it is, table -> [configuration, seed, evaluation], higher is better)
SIGNALS = {
    "val_score": ("the trainer's val_score: mean validation accuracy of the second half of "
                  "the evaluations", _val_score),
    "mean_val_accuracy_3": ("mean validation accuracy of the last 3 evaluations (the "
                            "val_score before this benchmark)",
                            lambda t: _trailing_mean(t.val_accuracy, 3)),
    "last_val_accuracy": ("validation accuracy at the last evaluation",
                          lambda t: t.val_accuracy.copy()),
    "mean_val_accuracy_6": ("mean validation accuracy of the last 6 evaluations",
                            lambda t: _trailing_mean(t.val_accuracy, 6)),
    "val_log_loss": ("validation log-loss at the last evaluation (negated)",
                     lambda t: -t.val_loss),
    "mean_val_log_loss_3": ("mean validation log-loss of the last 3 evaluations (negated)",
                            lambda t: -_trailing_mean(t.val_loss, 3)),
    "mean_val_accuracy_all": ("mean validation accuracy of every evaluation",
                              lambda t: _trailing_mean(t.val_accuracy, t.val_accuracy.shape[-1])),
}


# --- the replay's study ---------------------------------------------------------------------

@dataclass
class Replay:
    """A table, the space it was recorded from, and a selection signal."""

    table: Table
    signal: str = "val_score"
    space: Space = field(init=False)
    scores: np.ndarray = field(init=False)
    truth: np.ndarray = field(init=False)  # [configuration]: mean final test error
    levels: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.space = load_space(self.table.meta["space"])
        self.scores = SIGNALS[self.signal][1](self.table)
        self.truth = self.table.final_test_error().mean(axis=1)
        self.levels = {k: np.array(v, dtype=float) for k, v in self.table.meta["grid"].items()}
        self._index = {tuple(float(c[k]) for k in self.levels): i
                       for i, c in enumerate(self.table.configs)}
        self._log = {p.name: p.log for p in self.space.params}

    @property
    def full_steps(self) -> int:
        return self.table.full_steps

    def snap(self, config: dict[str, Any]) -> int:
        """The table's configuration nearest to `config`, parameter by parameter."""
        key = []
        for name, levels in self.levels.items():
            x, grid = float(config[name]), levels
            if self._log.get(name):
                x, grid = math.log(max(x, 1e-12)), np.log(levels)
            key.append(float(levels[int(np.argmin(np.abs(grid - x)))]))
        return self._index[tuple(key)]

    def seed_roles(self, study_seed: int, race_seeds: int) -> tuple[int, list[int]]:
        """The table's seed indices of a replayed study: its search's, then its race's."""
        n = len(self.table.seeds)
        if race_seeds >= n:
            raise ValueError(f"a race of {race_seeds} seeds needs a table of more than "
                             f"{race_seeds} seeds; this one has {n}")
        search = study_seed % n
        return search, [(search + 1 + i) % n for i in range(race_seeds)]

    def heldout(self, study_seed: int, race_seeds: int = 3) -> list[int]:
        """The table's seeds a replayed study never trains on, with a race of race_seeds:
        where its pick's error is measured without the noise it was chosen on."""
        search, race = self.seed_roles(study_seed, race_seeds)
        return [s for s in range(len(self.table.seeds)) if s != search and s not in race]

    def run_events(self, c: int, s: int) -> list[tuple[float, dict[str, Any]]]:
        """(trainer seconds, result) of each report a trial of configuration c on seed index
        s makes, as the trainable reports them (a diverged run: score 0 at its end)."""
        t = self.table
        out = []
        for e, step in enumerate(t.steps):
            if math.isnan(t.seconds[c, s, e]) or step > t.end_step[c, s]:
                break
            out.append((float(t.seconds[c, s, e]),
                        {"step": int(step), METRIC: float(self.scores[c, s, e]),
                         "test_accuracy": float(t.test_accuracy[c, s, e])}))
        if t.diverged[c, s]:
            out.append((float(t.end_seconds[c, s]),
                        {"step": int(t.end_step[c, s]), METRIC: 0.0, "diverged": 1}))
        return out

    def mean_full_seconds(self) -> float:
        done = ~self.table.diverged
        return float(self.table.end_seconds[done].mean())


@dataclass
class Outcome:
    """One replayed study: what it picked, what it cost, what its trials were."""

    strategy: str
    study_seed: int
    pick: int | None  # the table's configuration index
    cost: float  # trainer seconds of every trial, race included
    makespan: float  # simulated wall time with the workers
    trials: list[dict[str, Any]]
    duplicates: int  # search trials that replayed a configuration tried before
    race: dict[str, Any] | None = None

    def regret(self, replay: Replay) -> float:
        """True error of the pick minus the best configuration's, in % points."""
        if self.pick is None:
            return math.nan
        return 100.0 * float(replay.truth[self.pick] - replay.truth.min())

    def heldout_gain(self, replay: Replay, race_seeds: int = 3) -> float:
        """The defaults' final test error minus the pick's, in % points, on the table's
        seeds that no study of this seed trains on (NaN when there are none)."""
        seeds = replay.heldout(self.study_seed, race_seeds)
        if self.pick is None or not seeds:
            return math.nan
        errors = replay.table.final_test_error()[:, seeds].mean(1)
        return 100.0 * float(errors[replay.table.defaults_index] - errors[self.pick])


def simulate(replay: Replay, strategy: Strategy, study_seed: int, workers: int = 2,
             num_samples: int | None = None, budget: float | None = None,
             race_finalists: int = 3, race_seeds: int = 3, startup_for: int = 16) -> Outcome:
    """Replay one study: `num_samples` search trials, or as many as `budget` trainer
    seconds allow (less the race's expected cost), on `workers` asynchronous workers."""
    if strategy.short_top_k:
        return _short_top_k(replay, strategy, study_seed, num_samples, budget, race_finalists)
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler
    from ray.tune.search import Searcher

    from study.search import RaceAwareASHA, RaceSearch, is_race, make_searcher

    space, full = replay.space, replay.full_steps
    k = race_finalists if strategy.race else 0
    search_seed, race_idx = replay.seed_roles(study_seed, race_seeds if k else 0)
    inner = make_searcher(space, METRIC, MODE, None, f"replay-{study_seed}", study_seed, None,
                          full, num_samples or startup_for, strategy.sampler,
                          strategy.options())
    searcher = RaceSearch(inner, num_samples or 10 ** 6, k,
                          [replay.table.seeds[i] for i in race_idx], space.defaults())
    searcher.set_search_properties(METRIC, MODE, space.tune_space())
    scheduler = (RaceAwareASHA(time_attr="step", metric=METRIC, mode=MODE, max_t=full,
                               grace_period=min(space.grace_steps, full),
                               reduction_factor=space.reduction_factor)
                 if strategy.asha else FIFOScheduler())
    search_budget = None
    if budget is not None:
        search_budget = budget - (k + 1) * race_seeds * replay.mean_full_seconds() * bool(k)

    events: list[tuple[float, int, str, int]] = []  # (time, order, trial, report index)
    running: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    seen: set[int] = set()
    state = {"now": 0.0, "spent": 0.0, "order": 0, "finished": False, "duplicates": 0}

    def spent_now() -> float:
        return state["spent"] + sum(state["now"] - r["start"] for r in running.values())

    def launch() -> None:
        while len(running) < workers and not state["finished"]:
            if (search_budget is not None and searcher.suggested < searcher.num_samples
                    and spent_now() >= search_budget):
                searcher.num_samples = max(searcher.suggested, 1)  # the search ends here
            tid = f"{len(records):05d}"
            config = searcher.suggest(tid)
            if config is None:
                return
            if config == Searcher.FINISHED:
                state["finished"] = True
                return
            trial = SimpleNamespace(trial_id=tid, config=dict(config))
            race = is_race(config)
            c = replay.snap(config)
            s = replay.table.seeds.index(config["seed"]) if race else search_seed
            if not race:
                state["duplicates"] += c in seen
                seen.add(c)
            reports = replay.run_events(c, s)
            record = {"trial_id": tid, "phase": "race" if race else "search",
                      "entrant": config.get("entrant"), "table_index": c, "seed_index": s,
                      "config": {k_: v for k_, v in config.items()
                                 if k_ not in ("phase", "entrant")},
                      "status": "running", "steps": 0, "val_score": None,
                      "final_test_accuracy": None, "error": None}
            records.append(record)
            running[tid] = {"trial": trial, "reports": reports, "start": state["now"],
                            "record": record}
            scheduler.on_trial_add(None, trial)
            heapq.heappush(events, (state["now"] + reports[0][0], state["order"], tid, 0))
            state["order"] += 1

    def end(tid: str, seconds: float, result: dict[str, Any], stopped: bool) -> None:
        run = running.pop(tid)
        state["spent"] += seconds
        record = run["record"]
        record.update(steps=result["step"], val_score=result[METRIC],
                      final_test_accuracy=result.get("test_accuracy"), cost=seconds,
                      status="diverged" if result.get("diverged") else
                      "stopped_early" if stopped and result["step"] < full else "completed")

    launch()
    while events:
        now, _, tid, i = heapq.heappop(events)
        state["now"] = now
        run = running[tid]
        seconds, result = run["reports"][i]
        last = i == len(run["reports"]) - 1
        decision = scheduler.on_trial_result(None, run["trial"], result)
        if decision == TrialScheduler.STOP or last:
            if decision != TrialScheduler.STOP:
                searcher.on_trial_result(tid, result)
            scheduler.on_trial_complete(None, run["trial"], result)
            searcher.on_trial_complete(tid, result)
            end(tid, seconds, result, stopped=decision == TrialScheduler.STOP)
            launch()
        else:
            searcher.on_trial_result(tid, result)
            heapq.heappush(events, (run["start"] + run["reports"][i + 1][0], state["order"],
                                    tid, i + 1))
            state["order"] += 1
    return _outcome(replay, strategy, study_seed, records, state, k)


def _outcome(replay: Replay, strategy: Strategy, study_seed: int,
             records: list[dict[str, Any]], state: dict[str, Any], k: int) -> Outcome:
    search = [r for r in records if r["phase"] == "search"]
    race = None
    if k:
        race = race_summary(records, search, replay.space)
        choice = race["entrants"].get(race["decision"]["choice"])
        pick = replay.snap(choice["config"] if choice else replay.space.defaults())
    else:
        best = chosen_trial(search)
        pick = best["table_index"] if best else None
    return Outcome(strategy.name, study_seed, pick, sum(r.get("cost", 0.0) for r in records),
                   state["now"], records, state["duplicates"], race)


def _short_top_k(replay: Replay, strategy: Strategy, study_seed: int, num_samples: int | None,
                 budget: float | None, k: int) -> Outcome:
    """The baseline: sample configurations, train each to ASHA's grace step, then train only
    the k best there to the end; pick the best final score."""
    from study.search import make_sampler

    t, space = replay.table, replay.space
    s, _ = replay.seed_roles(study_seed, 0)
    short = int(np.searchsorted(t.steps, min(space.grace_steps, replay.full_steps)))
    if num_samples is None:
        c_short = float(np.nanmean(t.seconds[:, s, short]))
        c_rest = replay.mean_full_seconds() - c_short
        num_samples = max(k, int((budget - k * c_rest) // c_short))
    import optuna

    study = optuna.create_study(direction="maximize",
                                sampler=make_sampler(strategy.sampler, study_seed, num_samples))
    study.enqueue_trial(space.defaults())
    distributions = _distributions(space)
    picks = []
    for _ in range(num_samples):
        trial = study.ask(distributions)
        picks.append(replay.snap(trial.params))
        study.tell(trial, float(replay.scores[picks[-1], s, short]))
    at_short = sorted(range(len(picks)), key=lambda i: replay.scores[picks[i], s, short],
                      reverse=True)
    kept = set(at_short[:k])
    records, cost = [], 0.0
    for i, c in enumerate(picks):
        full = i in kept and not t.diverged[c, s]
        e = len(t.steps) - 1 if full else short
        seconds = float(t.end_seconds[c, s] if full else t.seconds[c, s, short])
        cost += seconds
        records.append({"trial_id": str(i), "table_index": c, "status": "completed" if full
                        else "stopped_early", "val_score": float(replay.scores[c, s, e]),
                        "steps": int(t.steps[e]), "cost": seconds})
    best = chosen_trial(records)
    return Outcome(strategy.name, study_seed, best["table_index"] if best else None, cost,
                   math.nan, records, len(picks) - len(set(picks)))


def _distributions(space: Space) -> dict[str, Any]:
    import optuna

    out = {}
    for p in space.params:
        kind = optuna.distributions.IntDistribution if p.type == "int" else \
            optuna.distributions.FloatDistribution
        out[p.name] = kind(p.low, p.high, log=p.log)
    return out


__all__ = ["Outcome", "Replay", "SIGNALS", "STRATEGIES", "Strategy", "simulate"]
