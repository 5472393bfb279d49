"""MindEye2-style models: per-subject ridge, shared backbone, diffusion prior."""
from fmri_recon.models.brain import BrainConfig, BrainNetwork, MindEyeModel, RidgeRegression, parameter_counts
from fmri_recon.models.prior import BrainDiffusionPrior, PriorConfig, PriorNetwork, ddim_time_pairs

__all__ = [
    "BrainConfig", "BrainNetwork", "MindEyeModel", "RidgeRegression", "parameter_counts",
    "BrainDiffusionPrior", "PriorConfig", "PriorNetwork", "ddim_time_pairs",
]
