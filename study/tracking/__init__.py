"""MLflow: the runs of a study (study, teacher and trial runs, their tags) and the students as
logged and registered models. Imports :mod:`study.train` (a model's input description) and
:mod:`study.errors`."""
