"""The one rule for a trial's final state: completed / pruned / failed (or still running).

Every place that shows or records a state uses :func:`classify` (Optuna through
:class:`study.search.tuning.PruningAwareOptunaSearch`, the MLflow ``state`` tag, the progress line, the
trials table), so a trial is never "pruned" in one place and "completed" in another.

The contract with the trainable: the *last* report of a trial that ran to its end carries
``final=1`` (a trial may also end early by itself, on validation patience, with ``final=1`` and
``stopped_early=1`` after fewer epochs than the budget). A trial that ended without ``final`` was
stopped by the scheduler (ASHA): pruned. Trainables older than the ``final`` flag never send the
key; for them "ran its whole budget" (``training_iteration >= max_epochs``) means final.
"""
from __future__ import annotations

from typing import Any, Mapping

COMPLETED, PRUNED, FAILED, UNFINISHED = "completed", "pruned", "failed", "unfinished"
#: States of a trial that is over (what counts as "finished" for a study's status).
ENDED = (COMPLETED, PRUNED, FAILED)


def is_final(result: Mapping[str, Any] | None, max_epochs: int) -> bool:
    """Whether ``result`` is the last report of a trial that finished on its own terms."""
    result = result or {}
    if "final" in result:
        return bool(result["final"])
    return int(result.get("training_iteration", 0) or 0) >= max_epochs


def classify(result: Mapping[str, Any] | None, max_epochs: int, *, error: bool = False, ended: bool = True,
             otherwise: str = UNFINISHED) -> str:
    """State of a trial from its last result.

    ``error``: the trial failed for good (after its retries). ``ended``: the trial will report no
    more (Tune completed or stopped it). A trial that neither failed nor reported ``final`` is
    pruned if it ended, else ``otherwise`` (e.g. ``running``, or ``unfinished`` after an interrupt).
    """
    if error:
        return FAILED
    if is_final(result, max_epochs):
        return COMPLETED
    return PRUNED if ended else otherwise
