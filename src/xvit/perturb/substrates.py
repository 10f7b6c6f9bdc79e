"""What a masked-out pixel becomes: the substrates of the pixel-space perturbation engine.

All values live in the model's normalised input space. A substrate has an image part, computed once per engine
call (``image``: the mean colour, black, a blurred copy of ``x``), and an optional per-mask part (``rows``: seeded
noise drawn once per mask index, so a mask's noise does not depend on the batch, the chunking or the image).

* ``"mean"``: 0 in normalised space, the dataset mean colour (RISE's ``torch.zeros_like``).
* ``"black"``: pixel 0, ``(0 − mean)/std`` per channel (Chefer et al. 2021; needs the checkpoint's mean/std).
* ``"blur"``: ``x`` blurred per channel (:func:`xvit.utils.filters.gaussian_blur`; RISE's folded kernel with zero
  padding, or torchvision's truncated kernel with reflect padding as in the TIS harness).
* ``"uniform"``: uniform noise in ``[low, high)`` (TIS ablation's ``torch.rand_like``).
* ``"noise"``: Gaussian noise ``ε ~ N(0, σ²)``; with ``additive=True`` the fill is ``x + ε``, so blending with a
  mask adds the noise outside the mask only (ViT-CX, Xie et al. 2023, arXiv:2211.03064, attribution-methods.md §5.3).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from xvit.utils.filters import gaussian_blur

__all__ = ["SUBSTRATES", "Black", "Blur", "GaussianNoise", "MeanColour", "Substrate", "TensorSubstrate",
           "UniformNoise", "black_value", "get_substrate"]


class Substrate(abc.ABC):
    """Base class: :meth:`image` per image, :meth:`rows` per stacked (image, mask) row."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def image(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` fill for every image of ``x`` (expanded views allowed), once per engine call."""

    def rows(self, fill: Tensor, mask_index: Tensor) -> Tensor:
        """Fill of stacked rows: ``fill`` ``(n, C, H, W)`` holds each row's image fill; ``mask_index`` ``(n,)``
        the row's mask. The default has no per-mask part."""
        return fill


def black_value(mean: Sequence[float], std: Sequence[float], like: Tensor) -> Tensor:
    """Normalised value of a black pixel, ``(0 − mean) / std`` per channel, shaped ``(1, C, 1, 1)``."""
    if len(mean) != like.shape[1] or len(std) != like.shape[1]:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries but the images have {like.shape[1]} "
                         "channels; pass the checkpoint's per-channel normalisation.")
    m = torch.tensor(mean, dtype=like.dtype, device=like.device)
    sd = torch.tensor(std, dtype=like.dtype, device=like.device)
    return (-m / sd).view(1, -1, 1, 1)


class MeanColour(Substrate):
    """0 in normalised space: the dataset mean colour."""

    name = "mean"

    def image(self, x: Tensor) -> Tensor:
        return x.new_zeros(1, 1, 1, 1).expand_as(x)


class Black(Substrate):
    """Pixel value 0 in ``[0, 1]`` space under the checkpoint's normalisation ``mean``/``std``."""

    name = "black"

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

    def image(self, x: Tensor) -> Tensor:
        return black_value(self.mean, self.std, x).expand_as(x)


class Blur(Substrate):
    """``x`` blurred per channel by a ``kernel_size``² Gaussian of std ``sigma``; ``kernel``/``padding`` as in
    :func:`~xvit.utils.filters.gaussian_blur` (RISE: ``"folded"``/``"zeros"``; TIS: ``"truncated"``/``"reflect"``)."""

    name = "blur"

    def __init__(self, kernel_size: int = 11, sigma: float = 5.0, *, kernel: str = "folded",
                 padding: str = "zeros") -> None:
        self.kernel_size, self.sigma, self.kernel, self.padding = kernel_size, sigma, kernel, padding

    def image(self, x: Tensor) -> Tensor:
        if self.padding == "reflect" and min(x.shape[2:]) <= self.kernel_size // 2:
            raise ValueError(f"Reflect padding needs images larger than {self.kernel_size // 2} px; got "
                             f"{tuple(x.shape[2:])}. Use zero padding or another substrate.")
        return gaussian_blur(x, self.kernel_size, self.sigma, kernel=self.kernel, padding=self.padding)


class _SeededNoise(Substrate):
    """Noise drawn per mask index from a generator seeded by ``(seed, mask index)``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    @abc.abstractmethod
    def _draw(self, out: Tensor, generator: torch.Generator) -> None:
        """Fill ``out`` in place from ``generator``."""

    def noise(self, like: Tensor, mask_index: Tensor) -> Tensor:
        """``(n, C, H, W)`` noise, row ``r`` drawn for mask ``mask_index[r]`` (one small draw per row)."""
        out = torch.empty_like(like)
        generator = torch.Generator(device=like.device)
        for row, index in enumerate(mask_index.tolist()):
            generator.manual_seed((self.seed * 1_000_003 + index) % (2**63))
            self._draw(out[row], generator)
        return out


class UniformNoise(_SeededNoise):
    """Uniform noise in ``[low, high)`` (normalised space), one draw per mask index."""

    name = "uniform"

    def __init__(self, low: float = 0.0, high: float = 1.0, *, seed: int = 0) -> None:
        super().__init__(seed)
        self.low, self.high = low, high

    def _draw(self, out: Tensor, generator: torch.Generator) -> None:
        out.uniform_(self.low, self.high, generator=generator)

    def image(self, x: Tensor) -> Tensor:
        return x.new_zeros(1, 1, 1, 1).expand_as(x)

    def rows(self, fill: Tensor, mask_index: Tensor) -> Tensor:
        return self.noise(fill, mask_index)


class GaussianNoise(_SeededNoise):
    """``ε ~ N(0, sigma²)`` per mask index; the fill is ``ε`` (noise around the mean colour) or, with
    ``additive=True``, ``x + ε`` so that a mask ``M`` gives ``x + ε ⊙ (1 − M)`` (ViT-CX's causal score uses
    both with the same ``ε``)."""

    name = "noise"

    def __init__(self, sigma: float = 0.1, *, additive: bool = False, seed: int = 0) -> None:
        super().__init__(seed)
        self.sigma, self.additive = sigma, additive

    def _draw(self, out: Tensor, generator: torch.Generator) -> None:
        out.normal_(0.0, self.sigma, generator=generator)

    def image(self, x: Tensor) -> Tensor:
        return x if self.additive else x.new_zeros(1, 1, 1, 1).expand_as(x)

    def rows(self, fill: Tensor, mask_index: Tensor) -> Tensor:
        return fill + self.noise(fill, mask_index)


class TensorSubstrate(Substrate):
    """A fixed fill broadcast to the images: ``(C, H, W)``, ``(B, C, H, W)`` or anything broadcastable."""

    name = "tensor"

    def __init__(self, fill: Tensor) -> None:
        self.fill = fill

    def image(self, x: Tensor) -> Tensor:
        try:
            return self.fill.to(device=x.device, dtype=x.dtype).expand_as(x)
        except RuntimeError as err:
            raise ValueError(f"A substrate tensor of shape {tuple(self.fill.shape)} does not broadcast to the "
                             f"images {tuple(x.shape)}.") from err


SUBSTRATES: dict[str, type[Substrate]] = {cls.name: cls for cls in (MeanColour, Black, Blur, UniformNoise,
                                                                     GaussianNoise)}


def get_substrate(spec: str | Substrate | Tensor, **kwargs: Any) -> Substrate:
    """A substrate from a name in :data:`SUBSTRATES` (``kwargs`` go to its class), an instance, or a tensor."""
    if isinstance(spec, Substrate):
        return spec
    if isinstance(spec, Tensor):
        return TensorSubstrate(spec)
    if spec not in SUBSTRATES:
        raise ValueError(f"Unknown substrate {spec!r}; choose one of {sorted(SUBSTRATES)}, a Substrate or a tensor.")
    cls = SUBSTRATES[spec]
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"Substrate {spec!r} needs parameters ({err}); pass them, e.g. "
                         f"get_substrate({spec!r}, ...), or give a {cls.__name__} instance.") from err

