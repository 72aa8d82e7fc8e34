"""Entry point: python study/run.py --space cifar100 [--address auto] ..."""

import os
import sys

# Run as a script, Python puts study/ first on sys.path; the package is imported by name.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
sys.path.insert(0, os.path.dirname(_here))

from study.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
