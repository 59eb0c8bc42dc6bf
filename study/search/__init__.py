"""The hyperparameter search: named spaces as YAML data (:mod:`.space`, ``spaces/``), the Tune
trainable (:mod:`.trainable`), the Tuner with its searcher and scheduler (:mod:`.tuning`), one rule
for a trial's state (:mod:`.trial_state`) and stage 2 of a study (:mod:`.stage`).

Imports every package below it: :mod:`study.analysis` (reports at the end of stage 2),
:mod:`study.distill`, :mod:`study.teachers`, :mod:`study.tracking`, :mod:`study.train`,
:mod:`study.cluster`."""
