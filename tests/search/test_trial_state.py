"""The one trial-state rule, and Optuna hearing it: a stopped trial is PRUNED, not COMPLETE."""
from __future__ import annotations

import optuna
import pytest

from study.search.trial_state import classify
from study.tracking.runs import browse_hint
from study.search.tuning import PruningAwareOptunaSearch

MAX = 3


@pytest.mark.parametrize("result, kwargs, state", [
    ({"training_iteration": 3, "final": 1}, {}, "completed"),
    ({"training_iteration": 2, "final": 1, "stopped_early": 1}, {}, "completed"),  # patience: ended by itself
    ({"training_iteration": 1}, {}, "pruned"),  # ended without final: the scheduler stopped it
    ({"training_iteration": 3}, {}, "completed"),  # a trainable from before the final flag
    ({"training_iteration": 3, "final": 0}, {}, "pruned"),  # the flag, when present, decides
    ({"training_iteration": 3, "final": 1}, {"error": True}, "failed"),
    ({"training_iteration": 1}, {"ended": False, "otherwise": "running"}, "running"),
    (None, {"ended": False}, "unfinished"),
])
def test_one_rule(result, kwargs, state):
    assert classify(result, MAX, **kwargs) == state


def _searcher() -> PruningAwareOptunaSearch:
    def space(trial):
        trial.suggest_float("alpha", 0.0, 1.0)

    return PruningAwareOptunaSearch(space=space, metric="acc", mode="max", max_epochs=MAX, seed=0,
                                    sampler=optuna.samplers.RandomSampler(seed=0))


def _run(searcher, trial_id, values, last_extra=None, error=False):
    searcher.suggest(trial_id)
    for epoch, value in enumerate(values[:-1], start=1):  # Tune does not pass the stopping result on
        searcher.on_trial_result(trial_id, {"acc": value, "training_iteration": epoch})
    last = {"acc": values[-1], "training_iteration": len(values), **(last_extra or {})}
    searcher.on_trial_complete(trial_id, result=None if error else last, error=error)


def test_optuna_records_pruned_trials_as_pruned_with_their_learning_curve():
    searcher = _searcher()
    _run(searcher, "stopped", [0.2, 0.3])  # stopped by ASHA after epoch 2
    _run(searcher, "final", [0.2, 0.4, 0.5], {"final": 1})
    _run(searcher, "early", [0.3, 0.3], {"final": 1, "stopped_early": 1})
    _run(searcher, "old-style", [0.1, 0.2, 0.6])
    _run(searcher, "crashed", [0.1], error=True)
    trials = {t.user_attrs.get("tune_trial_id", "crashed"): t for t in searcher._ot_study.trials}
    S = optuna.trial.TrialState
    assert {k: t.state for k, t in trials.items()} == {
        "stopped": S.PRUNED, "final": S.COMPLETE, "early": S.COMPLETE, "old-style": S.COMPLETE, "crashed": S.FAIL}
    assert trials["stopped"].intermediate_values == {1: 0.2, 2: 0.3} and trials["stopped"].value == 0.3
    assert trials["final"].intermediate_values == {1: 0.2, 2: 0.4, 3: 0.5} and trials["final"].value == 0.5


@pytest.mark.parametrize("uri, hint", [
    ("http://127.0.0.1:5000/", "open http://127.0.0.1:5000"),
    ("sqlite:////tmp/runs/mlflow.db", "mlflow ui --backend-store-uri sqlite:////tmp/runs/mlflow.db --host 127.0.0.1"),
])
def test_browse_hint_fits_the_tracking_uri(uri, hint):
    assert browse_hint(uri) == hint


def test_a_grid_searcher_silences_only_rays_grid_exhausted_warning(tmp_path, caplog):
    """Optuna's GridSampler stops its study when the last point is told; Ray logs that as a warning
    a user cannot act on. A grid searcher drops that one message and no other."""
    import logging

    from study.search.space import load_space
    from study.search.tuning import make_searcher

    space = load_space("kd_types").resolve_steps(2500)
    for _ in range(2):  # a second study in the same process adds no second filter
        make_searcher(space, seed=0, multi_objective=False, storage_url=f"sqlite:///{tmp_path / 'o.db'}",
                      study_name=f"s{_}", baselines=[], max_epochs=1)
    logger = logging.getLogger("ray.tune.search.optuna.optuna_search")
    assert len([f for f in logger.filters if type(f).__name__ == "_GridExhausted"]) == 1
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("`Study.stop` is supposed to be invoked inside an objective function or a callback.")
        logger.warning("a NaN was reported")
    assert [r.getMessage() for r in caplog.records] == ["a NaN was reported"]
