"""Dynamics models: the one MLP (`networks`), MLP ensembles, normalisers, and their fitting;
the Dreamer world model (`rssm`) and the DreamerV3 transforms (`transforms`); Gaussian
processes with moment matching for PILCO (`gp`); World Models' VAE (`vae`) and MDN-RNN
(`mdn_rnn`)."""

from mbrl_jax.models.ensemble import (
    PROPAGATION_MODES,
    Ensemble,
    EnsembleParams,
    EnsembleSpec,
    MemberOutput,
    ModelStep,
    Uncertainty,
    check_mode,
    make_ensemble,
)
from mbrl_jax.models import gp, mdn_rnn, networks, rssm, transforms, vae  # noqa: F401
from mbrl_jax.models.networks import ACTIVATIONS, MLP
from mbrl_jax.models.normalizer import Normalizer
from mbrl_jax.models.training import (
    FitConfig, FitMetrics, FitState, Trainer, check_fit, make_trainer)

__all__ = [
    "ACTIVATIONS", "PROPAGATION_MODES", "Ensemble", "EnsembleParams", "EnsembleSpec",
    "MemberOutput", "ModelStep", "Uncertainty", "check_mode", "make_ensemble", "MLP", "Normalizer",
    "FitConfig", "FitMetrics", "FitState", "Trainer", "check_fit", "make_trainer", "networks",
    "rssm", "transforms", "vae", "mdn_rnn",
]
