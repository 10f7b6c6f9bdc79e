"""The perturbation engine shared by mask methods and perturbation metrics.

:func:`score` scores B images under M masks for K targets in one call, returning ``(B, M, K)``: masks in pixel
space blend each image with a substrate (:mod:`~xvit.perturb.substrates`); masks in token space remove patch
tokens from the sequence (:meth:`xvit.adapters.ViTAdapter.forward_tokens`). Mask stacks can be lazy
(:class:`RankMasks`, the states of deletion/insertion curves).
"""

from xvit.perturb.engine import READOUTS, score
from xvit.perturb.masks import Masks, RankMasks, TensorMasks, as_masks, pixel_ranks
from xvit.perturb.substrates import (
    SUBSTRATES,
    Black,
    Blur,
    GaussianNoise,
    MeanColour,
    Substrate,
    TensorSubstrate,
    UniformNoise,
    black_value,
    get_substrate,
)

__all__ = ["READOUTS", "SUBSTRATES", "Black", "Blur", "GaussianNoise", "Masks", "MeanColour", "RankMasks",
           "Substrate", "TensorMasks", "TensorSubstrate", "UniformNoise", "as_masks", "black_value",
           "get_substrate", "pixel_ranks", "score"]
