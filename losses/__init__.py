"""Loss terms of leveled KD: CE (+ label smoothing) and the registered KD terms.

Importing this package registers every KD term (one module each): the poster's ``kl``
and ``fm``, and ``dkd``, ``dist``, ``rkd`` and ``jacobian`` (input-gradient matching) from the literature. A new method is one
module here plus an import line below (see README "Adding a KD method").
"""
# registration order is the order of the leveled sum and of the report columns: the poster's terms first
from .kd import KLTerm, kd_loss, kl_divergence, normalized_weights, soft_targets  # isort: skip
from .feature_matching import FeatureMatching, FMTerm  # isort: skip
from . import dkd, dist, rkd, jacobian  # noqa: F401, E402  isort: skip  (registration)
from .cross_entropy import cross_entropy
from .leveled import POSTER_VARIANTS, LeveledKDConfig, LeveledKDLoss, default_scales
from .registry import HyperParam, KDTerm, all_hyperparams, kd_term, kd_terms, register_kd_term, scale_key

__all__ = ["POSTER_VARIANTS", "FMTerm", "FeatureMatching", "HyperParam", "KDTerm", "KLTerm", "LeveledKDConfig",
           "LeveledKDLoss", "all_hyperparams", "cross_entropy", "default_scales", "kd_loss", "kd_term", "kd_terms",
           "kl_divergence", "normalized_weights", "register_kd_term", "scale_key", "soft_targets"]
