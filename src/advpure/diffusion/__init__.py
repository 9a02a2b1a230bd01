"""Diffusion models for purification: schedules, the eps-model contract, samplers, UNet loading.

- :mod:`.schedule`: continuous VP SDE and discrete DDPM schedules (``t = n / 1000``).
- :mod:`.models`: ``eps_model(x_t, t)`` contract, :class:`DiscreteTimeAdapter`, :class:`GaussianScoreModel`,
  UNet presets (``digits``, ``cifar10-small``), :func:`load_unet`, :func:`load_denoiser`.
- :mod:`.samplers`: :func:`diffuse`, :func:`reverse_sde`, :func:`ddpm_ancestral`, :func:`ddim`; :func:`reverse_path`
  (any of the three, with its intermediate states).
"""

from .models import PRESETS, DiscreteTimeAdapter, GaussianScoreModel, build_unet, load_denoiser, load_unet, unet_config
from .samplers import ddim, ddpm_ancestral, ddpm_timesteps, diffuse, reverse_path, reverse_sde, sample
from .schedule import DDPMConfig, DiscreteSchedule, VPSchedule, VPSDEConfig, eps_to_score, get_schedule, score_to_eps

__all__ = [
    "PRESETS", "DiscreteTimeAdapter", "GaussianScoreModel", "build_unet", "load_denoiser", "load_unet", "unet_config",
    "ddim", "ddpm_ancestral", "ddpm_timesteps", "diffuse", "reverse_path", "reverse_sde", "sample",
    "DDPMConfig", "DiscreteSchedule", "VPSchedule", "VPSDEConfig", "eps_to_score", "get_schedule", "score_to_eps",
]
