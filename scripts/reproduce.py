"""Re-run the seed poster's findings with the study's named spaces and write their verdicts.

    python scripts/reproduce.py --quick             # MNIST, small budget, under 30 minutes on 2 CPU cores
    python scripts/reproduce.py                     # the budget docs/RESULTS.md reports
    python scripts/reproduce.py --datasets mnist fashion_mnist --teacher-steps 25000   # the poster's scale
    python scripts/reproduce.py --quick --controls  # also the inductive_bias control study (teachers to 25,000 steps)

The command line only: the reproduction is :mod:`study.analysis.reproduce` (also ``python -m study.analysis.reproduce``).
"""
from study.analysis.reproduce import main

if __name__ == "__main__":
    raise SystemExit(main())
