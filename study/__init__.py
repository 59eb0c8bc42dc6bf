"""leveled-kd's study: stage packages in the order data flows, each importing only those below it.

    errors      user errors and how a command line shows them (imported by every package)
    cluster     cluster launcher checks and fault injection
    train       data, the one training loop, evaluation, per-image results
    tracking    MLflow runs and logged models
    teachers    snapshot banks and stage 1 (building them)
    distill     one distillation run: its configuration, its trainer, its command line
    analysis    statistics, findings, reports, the reproduction
    search      spaces, the Tune trainable, tuning, stage 2
    run         the driver behind run_study.py (nothing imports it)

``tests/test_layering.py`` holds the order.
"""
