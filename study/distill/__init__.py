"""One distillation run: its validated configuration (:mod:`.config`), the trainer it builds from
teacher caches (:mod:`.spec`), and its command line (``python -m study.distill``, :mod:`.cli`).

Imports :mod:`study.teachers`, :mod:`study.tracking` and :mod:`study.train`; a search's trials and
the command line run the same code."""
