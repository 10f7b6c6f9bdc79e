"""xvit-shapes as a data source: ``xvit-shapes:<variant>:<split>[:N][:marker=MODE]``, rendered image by image."""

from __future__ import annotations

from typing import Any

import numpy as np

from xvit.data.shapes import (
    GENERATOR_VERSION,
    MARKER_MODES,
    SHAPE_CLASSES,
    SPLITS,
    VARIANTS,
    default_seed,
    make_shapes,
    resolve_marker_mode,
    shapes_labels,
)
from xvit.data.sources.base import DataSource, DataSpec, DataSpecError, register_source

__all__ = ["DEFAULT_SHAPES_N", "ShapesSource"]

DEFAULT_SHAPES_N = 200
_PREFIX = "xvit-shapes"


@register_source(_PREFIX, description="the procedural xvit-shapes benchmark (labels, object masks, markers)")
class ShapesSource(DataSource):
    """``N`` images (default 200) of an xvit-shapes variant (``single``, ``pair``, ``spurious``) and split,
    rendered with :func:`xvit.data.make_shapes` when read. ``spurious`` data also carries the mask of its corner
    marker; ``marker=MODE`` picks the marker policy (``correlated``, ``random``, ``aligned``, ``none``; default:
    ``random`` for ``test``, ``correlated`` otherwise), e.g. ``xvit-shapes:spurious:test:500:marker=random``.

    Images are rendered at the model's size where it is square and at least 24 pixels (masks stay pixel-exact,
    nothing is resized), else at 112 and resized when loaded.
    """

    forms = "xvit-shapes:<variant>:<split>[:N][:marker=MODE]"

    def __init__(self, spec: DataSpec, *, size: tuple[int, int] | None = None) -> None:
        super().__init__(spec, size=size)
        self.variant, self.split, self.marker = spec.variant, spec.split, spec.marker
        self.render_size = size[0] if size is not None and size[0] == size[1] and size[0] >= 24 else 112
        n = DEFAULT_SHAPES_N if spec.n is None else spec.n
        self.ids = [f"shapes:{self.variant}:{self.split}:{i}" for i in range(n)]
        self.labels = shapes_labels(self.variant, n, split=self.split)
        self.class_names = list(SHAPE_CLASSES)
        self.has_masks, self.pair = True, self.variant == "pair"
        self.has_markers = self.variant == "spurious"
        self.info = {"format": "xvit-shapes", "variant": self.variant, "split": self.split,
                     "render_size": self.render_size, "base_seed": default_seed(self.variant, self.split),
                     "generator_version": GENERATOR_VERSION}
        if self.has_markers:
            self.info["marker"] = resolve_marker_mode(self.variant, self.split, self.marker)
        self._last: tuple[int, Any] | None = None  # the last rendered image, shared by read and read_marker

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        parts = text.split(":")
        usage = (f"expected {cls.forms} with variant in {', '.join(VARIANTS)}, split in {', '.join(SPLITS)} and "
                 f"MODE (spurious only) in {', '.join(MARKER_MODES)}, e.g. xvit-shapes:single:test:200 or "
                 f"xvit-shapes:spurious:test:500:marker=random; got {text!r}.")
        if parts[0] != _PREFIX or len(parts) < 3 or parts[1] not in VARIANTS or parts[2] not in SPLITS:
            raise DataSpecError(usage)
        variant, split, rest = parts[1], parts[2], parts[3:]
        n = DEFAULT_SHAPES_N
        if rest and "=" not in rest[0]:
            if not rest[0].isdigit() or int(rest[0]) < 1:
                raise DataSpecError(f"N in {text!r} must be a positive integer. " + usage)
            n = int(rest.pop(0))
        options: dict[str, str] = {}
        for part in rest:
            key, sep, value = part.partition("=")
            if not sep or key != "marker":
                raise DataSpecError(f"{part!r} in {text!r} is not an option: the only option is marker=MODE, "
                                    "after N. " + usage)
            if key in options:
                raise DataSpecError(f"{text!r} sets {key}= twice. " + usage)
            options[key] = value
        marker = options.get("marker")
        if marker is not None and variant != "spurious":
            raise DataSpecError(f"marker= in {text!r} applies only to the spurious variant, e.g. "
                                f"xvit-shapes:spurious:{split}:{n}:marker={marker}.")
        try:
            resolve_marker_mode(variant, split, marker)
        except ValueError as err:
            raise DataSpecError(f"marker in {text!r}: {err}") from None
        return DataSpec(_PREFIX, variant=variant, split=split, n=n, marker=marker)

    @classmethod
    def format(cls, spec: DataSpec) -> str:
        n = "" if spec.n is None else f":{spec.n}"
        marker = "" if spec.marker is None else f":marker={spec.marker}"
        return f"{_PREFIX}:{spec.variant}:{spec.split}{n}{marker}"

    def _render(self, i: int) -> Any:
        if self._last is None or self._last[0] != i:
            batch = make_shapes(self.variant, 1, size=self.render_size, split=self.split, marker=self.marker, start=i)
            self._last = (i, batch)
        return self._last[1]

    def read(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        batch = self._render(i)
        masks = batch.masks[0].numpy()
        return batch.images[0].permute(1, 2, 0).numpy(), list(masks) if self.pair else [masks]

    def read_marker(self, i: int) -> np.ndarray:
        x0, y0, x1, y1 = self._render(i).marker_boxes[0].tolist()  # zeros where the image has no marker
        out = np.zeros((self.render_size, self.render_size), dtype=bool)
        out[y0:y1, x0:x1] = True
        return out
