"""Teacher and student architectures, built by name with :func:`build_model`."""
from . import cnn, involution, mlp, vit  # noqa: F401  (registers the architectures)
from .registry import ModelOutput, build_model, feature_dim, model_names, register_model

__all__ = ["ModelOutput", "build_model", "feature_dim", "model_names", "register_model"]
