"""Backbones (ResNet-18/50) and heads (MLP projectors and predictors, distillation predictor, classifier).

Each SSL method's reference heads are built by ``jaxcssl.methods.projector_for`` / ``predictor_for``
/ ``distill_predictor_for`` from the method's own spec.
"""
from jaxcssl.models.heads import DistillPredictor, HeadSpec, LinearClassifier, MLPHead, mlp_head
from jaxcssl.models.resnet import ResNet, feature_dim, resnet18, resnet50, standardize_kernel

__all__ = [
    "DistillPredictor",
    "HeadSpec",
    "LinearClassifier",
    "MLPHead",
    "ResNet",
    "feature_dim",
    "mlp_head",
    "resnet18",
    "resnet50",
    "standardize_kernel",
]
