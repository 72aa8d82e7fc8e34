"""`python -m study.bench replay|record|check|live ...`: see study/bench/__init__.py."""

import sys

MODES = {"replay": "study.bench.report", "record": "study.bench.record",
         "check": "study.bench.check", "live": "study.bench.live",
         "overhead": "study.bench.overhead", "scale": "study.bench.scale",
         "big_study": "study.bench.big_study"}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        print(f"usage: python -m study.bench {{{','.join(MODES)}}} ...\n\n"
              + (__import__("study.bench").bench.__doc__ or ""), file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(MODES[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
