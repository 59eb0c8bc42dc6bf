"""``python -m study.distill``: one distillation run from the command line (see :mod:`.cli`)."""
import sys

from study.distill.cli import main
from study.errors import run_cli

sys.exit(run_cli(main))
