"""`python -m trainer.bench.threads`: a whole `python -m trainer` run with 1 thread and with
every usable CPU's, on an idle machine and beside a busy neighbour (another trainer, one
thread, training for as long as the measurement lasts). Side by side, alternating, in one
run: the machine's noise hits every configuration alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from trainer.threads import usable_cpus


def _trainer(threads: int, steps: int, out: str) -> list[str]:
    return [sys.executable, "-m", "trainer", "--total-steps", str(steps),
            *(["--threads", str(threads)] if threads else []), "--save-path", out, "--overwrite"]


def timed_run(threads: int, steps: int, work: str) -> float:
    """Wall seconds of one trainer process, start to exit."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    start = time.perf_counter()
    subprocess.run(_trainer(threads, steps, os.path.join(work, f"t{threads}")), env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def neighbour(work: str) -> subprocess.Popen:
    """A trainer on one thread, long enough to outlast the measurement (killed after)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(_trainer(1, 1_000_000, os.path.join(work, "neighbour")), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(steps: int, repeats: int, counts: list[int]) -> list[dict]:
    """Every (load, threads) configuration `repeats` times, alternating."""
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for load in ("idle", "busy"):
            busy = neighbour(work) if load == "busy" else None
            try:
                if busy is not None:
                    time.sleep(8)  # past its imports and data loading: training
                seconds = {n: [] for n in counts}
                for _ in range(repeats):
                    for n in counts:
                        seconds[n].append(timed_run(n, steps, work))
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            rows += [{"load": load, "threads": n, "steps": steps, "seconds": s,
                      "median_s": statistics.median(s)} for n, s in seconds.items()]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.bench.threads", description=__doc__)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    cpus = usable_cpus()
    counts = sorted({1, cpus}) + [0]  # 0: the default, --threads left to the trainer
    rows = measure(args.steps, args.repeats, counts)
    print(f"python -m trainer --total-steps {args.steps} (digits), whole process; "
          f"{cpus} usable CPUs (the default --threads); median of {args.repeats}")
    print("| load | threads | median s | runs s |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['load']} | {r['threads'] or 'default'} | {r['median_s']:.1f} | "
              + ", ".join(f"{s:.1f}" for s in r["seconds"]) + " |")
    for load in ("idle", "busy"):
        one, many, default = (next(r["median_s"] for r in rows if r["load"] == load and
                                   r["threads"] == n) for n in (1, cpus, 0))
        print(f"{load}: {cpus} threads take {many / one:.2f}x the time of 1; the default "
              f"{default / one:.2f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"usable_cpus": cpus, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
