"""Teachers: snapshot banks on disk with their manifests and output caches (:mod:`.bank`), and
stage 1 of a study, which builds them as Ray tasks (:mod:`.stage`). Imports :mod:`study.train`."""
