"""Loss terms of leveled KD: CE (+ label smoothing), KD (T^2 KL), feature matching, their leveled sum."""
from .cross_entropy import cross_entropy
from .feature_matching import FeatureMatching
from .kd import kd_loss, kl_divergence, normalized_weights, soft_targets
from .leveled import LeveledKDConfig, LeveledKDLoss

__all__ = ["FeatureMatching", "LeveledKDConfig", "LeveledKDLoss", "cross_entropy", "kd_loss",
           "kl_divergence", "normalized_weights", "soft_targets"]
