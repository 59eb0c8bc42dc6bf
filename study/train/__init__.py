"""Data and the one training loop: datasets as in-memory tensors and their splits, translated
views, the :class:`~study.train.trainer.Trainer`, evaluation over every shift at once, per-image
results, and the runtime settings (device, precision, threads) they share.

Knows nothing of teachers, searches or MLflow. Imports only :mod:`study.errors` (and ``models``,
``losses``)."""
