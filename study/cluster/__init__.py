"""Running on a Ray cluster: the launcher-config checks (``python -m study.cluster.config``) and
fault injection for the fault-tolerance tests and benchmarks. Imports only :mod:`study.errors`."""
