"""leveled-kd: a distributed hyperparameter study of leveled knowledge distillation.

    python run_study.py --space leveled_kd                 # local: Ray starts itself on 127.0.0.1
    python run_study.py --space leveled_kd --address auto  # on a running Ray cluster
    python run_study.py --list-spaces
    python run_study.py --list-keys                        # every key a space or --set may name
    python run_study.py --space my_study/study.yaml        # a study of your own (docs/byo.md)
    python run_study.py --list-keys --space my_study/study.yaml   # ... and what it can name
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray listens on loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run ... at" line per trial

from study.errors import run_cli  # noqa: E402
from study.errors import InputError, check_device  # noqa: E402

DEFAULT_SPACE = "leveled_kd"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_study.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    what = p.add_argument_group("what to study")
    what.add_argument("--space", default=None,
                      help=f"named search space (see --list-spaces) or a YAML path (default: {DEFAULT_SPACE})")
    what.add_argument("--list-spaces", action="store_true", help="list the named spaces and exit")
    what.add_argument("--list-keys", action="store_true",
                      help="list every key a space or --set may name (default, range, meaning) and exit")
    what.add_argument("--set", action="append", metavar="KEY=VALUE", help="fix a space key, e.g. --set teachers=cnn_1")
    what.add_argument("--dataset", default=None,
                      help="a registered dataset (mnist, fashion_mnist, cifar10, or one a plug-in registers) or an "
                           "image folder's path (DIR/{train,test}/<class>/); default: the space's dataset, else mnist")
    what.add_argument("--import", dest="imports", action="append", metavar="FILE_OR_MODULE",
                      help="import a plug-in first (a .py file or a module name) that registers datasets, models or "
                           "KD terms; repeatable (a space's imports: does the same)")
    what.add_argument("--robustness", default="translation", metavar="FAMILY[,FAMILY]",
                      help="robustness families to report on the test images (translation, rotation, scaling, noise, "
                           "or a plug-in's); translation stays the objective unless --objective names a family")
    what.add_argument("--objective", default="translated", metavar="{translated,transfer,FAMILY}",
                      help="what the search maximizes on validation: translated accuracy, the transfer ratio "
                           "(student - no KD) / (teacher - no KD) against a no-KD reference student of each seed, "
                           "or another robustness family's accuracy (rotation, scaling, noise, or a plug-in's: "
                           "scored on the validation images every epoch, and on the test images at the end)")
    what.add_argument("--multi-objective", action="store_true",
                      help="optimize validation clean and translated accuracy together (Pareto front)")
    budget = p.add_argument_group("budget (defaults finish in about 7 minutes on a 2-core CPU)")
    budget.add_argument("--num-samples", type=int, default=None,
                        help="search trials (default: the grid's size for grid spaces, 12 otherwise)")
    budget.add_argument("--max-epochs", type=int, default=3, help="student epochs per trial (at most)")
    budget.add_argument("--patience", type=int, default=2,
                        help="stop a student after this many epochs without a gain in validation clean accuracy "
                             "(0 = always train --max-epochs)")
    budget.add_argument("--min-epochs", type=int, default=0,
                        help="never stop a student before this many epochs, whatever --patience says: a floor "
                             "against stopping on noisy early validation gains (0 = no floor)")
    budget.add_argument("--train-subset", type=int, default=0,
                        help="student training images (0 = the whole training split)")
    budget.add_argument("--teacher-steps", type=int, default=500, help="train teacher banks up to this step")
    budget.add_argument("--teacher-eval-images", type=int, default=300, help="test images each snapshot is scored on")
    budget.add_argument("--val-images", type=int, default=1000, help="validation images per epoch (0 = all)")
    budget.add_argument("--test-images", type=int, default=2000, help="test images at the end (0 = all 10k)")
    budget.add_argument("--seed", type=int, default=0)
    budget.add_argument("--no-baseline", action="store_true", help="skip the no-KD baseline trial(s)")
    budget.add_argument("--no-asha", action="store_true", help="no early stopping")
    run = p.add_argument_group("where and how")
    run.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                     help="Ray cluster address ('auto' on a cluster); default: $RAY_ADDRESS, else a new local instance")
    run.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    run.add_argument("--cpus-per-trial", type=float, default=1.0)
    run.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions share a GPU, e.g. 0.25")
    run.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial from its checkpoint")
    run.add_argument("--device", default="auto", help="auto (CUDA when the trial has a GPU), cpu or cuda")
    run.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                     help="teachers, caches and students: auto = bf16 on CUDA and on CPUs with native bf16 "
                          "(avx512_bf16 / amx_bf16), else fp32; fp32 forces full precision")
    run.add_argument("--teacher-precision", default=None, choices=["auto", "fp32", "bf16"],
                     help="a new teacher bank's precision, when it differs from the students' (default: "
                          "--precision); e.g. bf16 teachers, as earlier seeds' banks were trained, with fp32 students")
    run.add_argument("--data-root", default="data", help="torchvision data root (downloaded there if missing)")
    run.add_argument("--no-download", action="store_true")
    run.add_argument("--output-dir", default="runs")
    run.add_argument("--bank-dir", default=None, help="teacher banks (default: $LEVELED_KD_BANK or OUTPUT_DIR/teachers)")
    run.add_argument("--study-name", default=None, help="default: <space>-<dataset>; also the MLflow experiment")
    run.add_argument("--tracking-uri", default=None,
                     help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///OUTPUT_DIR/mlflow.db)")
    run.add_argument("--optuna-storage", default=None, help="default: sqlite:///OUTPUT_DIR/optuna.db")
    run.add_argument("--keep-best", type=int, default=3, help="log the best K students as MLflow models (the best one registered)")
    run.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    run.add_argument("--resume", action="store_true", help="continue an interrupted study (Tuner.restore)")
    run.add_argument("--quiet", action="store_true")
    run.add_argument("--verbose", action="store_true", help="show Ray's and the trials' own logs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_spaces:
        from study.search.space import list_spaces

        spaces = list_spaces()
        width = max(len(name) for name, _ in spaces)
        for name, description in spaces:
            print(f"{name:<{width}}  {description}")
        return 0
    if args.list_keys:
        from study.distill.config import key_table

        if args.space or args.imports:  # the keys of that space, its plug-ins and pretrained teachers included
            from study.search.space import load_space, registered_table
            from study.train.plugins import import_plugins

            import_plugins(args.imports or [])
            space = load_space(args.space or DEFAULT_SPACE)
            print(key_table())
            print()
            print(registered_table(space))
            return 0
        print(key_table())
        return 0
    args.space = args.space or DEFAULT_SPACE
    for flag in ("max_epochs", "teacher_steps", "teacher_eval_images"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be >= 1")
    for flag in ("train_subset", "val_images", "test_images", "patience", "min_epochs"):
        if getattr(args, flag) < 0:
            raise InputError(f"--{flag.replace('_', '-')} must be >= 0")
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        raise InputError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if args.max_failures < 0 or args.keep_best < 0:
        raise InputError("--max-failures and --keep-best must be >= 0")
    if args.num_cpus is not None and args.num_cpus < 1:
        raise InputError("--num-cpus must be >= 1")
    if not args.address:  # on a cluster the GPUs are on the workers: the driver cannot check them
        check_device(args.device)
    if args.device.startswith("cuda") and args.gpus_per_trial == 0:
        raise InputError(f"--device {args.device} needs --gpus-per-trial > 0 (trials without a GPU see no CUDA device)")
    # before Ray starts: its local workers (teacher tasks, trials) inherit the setting (study/train/runtime.py)
    os.environ["LEVELED_KD_PRECISION"] = args.precision
    from study.run import run

    return run(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
