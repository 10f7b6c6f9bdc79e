"""The description of a training run: :class:`TrainConfig`, validated before anything is loaded or trained."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from xvit.data.shapes import resolve_marker_mode
from xvit.data.sources import parse_data_spec
from xvit.models import MODEL_VARIANTS, Preprocessing, get_variant
from xvit.registry import did_you_mean

__all__ = ["TrainConfig", "TrainConfigError", "SHAPES_PREFIX", "TOKEN_COVERAGE", "MEAN", "STD", "shapes_marker",
           "shapes_variant"]

SHAPES_PREFIX = "xvit-shapes:"
TOKEN_COVERAGE = 0.1
"""Token labelling: a patch is an object token where the object mask covers at least this share of it."""
INITS = ("default", "mimetic")
DISTILL_MODES = ("hard", "soft")
MEAN = STD = (0.5, 0.5, 0.5)
"""The normalisation of the models xvit trains."""


class TrainConfigError(ValueError):
    """A training run that cannot work, found before training starts (a usage error on the command line)."""


@dataclass
class TrainConfig:
    """Everything that decides a training run; stored in the checkpoint's ``config.json``.

    ``data`` is ``"xvit-shapes:<variant>"`` (``single`` or ``spurious``), trained on an endless stream, or
    the spec of a data source with one label per image (:func:`xvit.data.load_dataset`: a folder with one
    sub-folder per class, a folder with a ``manifest.json``, ``mnist:PATH[:SPLIT]``), of which a seeded
    ``holdout_fraction`` is held out for validation and testing. For xvit-shapes ``train_size`` images are
    rendered per epoch, fresh each epoch unless ``fresh_data`` is False. ``arch`` names a registered model
    variant (see :func:`xvit.models.variants`), ``preset`` one of its size presets; ``embed_dim``/``depth``/
    ``num_heads``/``mlp_ratio`` override the preset. The first ``low_res_epochs`` epochs see images
    downsampled to ``low_res_size`` (about 4x cheaper at half size; the model resamples its position
    embedding), the rest full-size images. ``token_loss`` > 0 (xvit-shapes only) adds token labelling: an
    auxiliary linear head, dropped after training, classifies every final patch token as the image's class
    where the object covers at least ``TOKEN_COVERAGE`` of the patch and as background elsewhere (the mean
    loss over object tokens and that over background tokens weigh equally). The dense signal from the
    ground-truth masks shortens the long initial plateau of a ViT trained from scratch on this task.
    ``teacher`` (a directory written by :func:`xvit.training.train_teacher`) adds knowledge distillation from
    that CNN to the class head, with the ``distill_weight`` ``w`` of :func:`~xvit.training.distillation_loss`:
    ``distill="hard"`` trains on the teacher's top-1 label (DeiT's hard-label distillation, Touvron et al. 2021,
    without a distillation token, so the student stays a plain ViT), ``"soft"`` on its softened probabilities at
    ``distill_temperature`` (Hinton et al. 2015).
    ``model_args`` are further fields of the variant's config (e.g. a WinfT window or an SVDA spectrum), checked
    against the config class. A model that defines ``regularization_loss()`` has it added to the training loss
    (e.g. SVDA's orthonormality penalty). With ``resume`` a run continues from the ``train_state.pt`` that every
    finished epoch writes to ``out`` (the same config is required), so an interrupted run loses at most one epoch.
    ``track_indicators`` records SVDA's six indicators at step 0 and after every epoch on ``track_probe_size``
    validation images (:class:`~xvit.training.svda_tracking.IndicatorTracking`: ``indicators.csv`` and plots in
    ``out``; any ViT-compatible variant). ``command`` is the command line that started the run, recorded in the
    checkpoint.
    """

    data: str = "xvit-shapes:single"
    out: str = "runs/xvit-train"
    arch: str = "vit"
    preset: str = "tiny"
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    patch_size: int = 8
    img_size: int = 112
    reg_tokens: int = 0
    epochs: int = 10
    low_res_size: int | None = None
    low_res_epochs: int = 0
    train_size: int = 10_000
    fresh_data: bool = True
    val_size: int = 1_000
    test_size: int = 2_000
    holdout_fraction: float = 0.1
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    token_loss: float = 0.0
    teacher: str | None = None
    distill: str = "hard"
    distill_weight: float = 0.5
    distill_temperature: float = 1.0
    init: str = "default"
    grad_clip: float = 1.0
    flip: bool = True
    bf16: bool = True
    seed: int = 0
    data_seed: int | None = None
    progress: bool = True
    resume: bool = False
    track_indicators: bool = False
    track_probe_size: int = 512
    command: str | None = None

    @property
    def preprocessing(self) -> Preprocessing:
        """How the trained model expects its input (stored in the checkpoint): resized bilinearly to ``img_size``,
        normalised with :data:`MEAN` and :data:`STD`."""
        return Preprocessing(size=(self.img_size, self.img_size), mean=MEAN, std=STD, interpolation="bilinear")

    def validate(self) -> None:
        """Raise :class:`TrainConfigError` for a run that cannot work, or
        :class:`~xvit.data.sources.DataSpecError` for a malformed or missing ``data`` spec, before any data is
        read; :func:`xvit.training.train` calls it first."""
        for name in ("epochs", "batch_size", "img_size", "patch_size", "train_size", "val_size", "test_size",
                     "track_probe_size"):
            if getattr(self, name) < 1:
                raise TrainConfigError(f"{name} must be positive; got {getattr(self, name)}.")
        for name in ("embed_dim", "depth", "num_heads", "mlp_ratio", "low_res_size"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise TrainConfigError(f"{name} must be positive; got {getattr(self, name)}.")
        for name in ("lr", "min_lr"):
            if not getattr(self, name) > 0:
                raise TrainConfigError(f"{name} must be positive; got {getattr(self, name)}.")
        for name in ("reg_tokens", "low_res_epochs", "weight_decay", "warmup_epochs", "token_loss", "grad_clip"):
            if getattr(self, name) < 0:
                raise TrainConfigError(f"{name} must not be negative; got {getattr(self, name)}.")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise TrainConfigError(f"holdout_fraction must lie strictly between 0 and 1; got "
                                   f"{self.holdout_fraction}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise TrainConfigError(f"label_smoothing must lie in [0, 1); got {self.label_smoothing}.")
        if self.arch not in MODEL_VARIANTS:
            raise TrainConfigError(f"Unknown model variant {self.arch!r}.{did_you_mean(self.arch, MODEL_VARIANTS)} "
                                   f"Registered: {', '.join(MODEL_VARIANTS)}.")
        variant = get_variant(self.arch)
        if self.preset not in variant.presets:
            raise TrainConfigError(f"Unknown {self.arch} preset {self.preset!r}; choose one of "
                                   f"{sorted(variant.presets)}.")
        if self.img_size % self.patch_size:
            raise TrainConfigError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}.")
        known = {f.name for f in fields(variant.config_class)} if is_dataclass(variant.config_class) else set()
        reserved = {"embed_dim", "depth", "num_heads", "mlp_ratio", "img_size", "patch_size", "num_classes",
                    "reg_tokens"}
        for key in self.model_args:
            if key in reserved:
                raise TrainConfigError(f"model_args cannot set {key!r}: use its own option "
                                       f"(--{key.replace('_', '-')}).")
            if key not in known:
                raise TrainConfigError(f"{self.arch!r} has no config field {key!r}.{did_you_mean(key, known)} "
                                       f"Its fields: {', '.join(sorted(known - reserved))}.")
        sizes = {**variant.presets[self.preset], **{k: getattr(self, k) for k in ("embed_dim", "num_heads")
                                                    if getattr(self, k) is not None}}
        if "embed_dim" in sizes and "num_heads" in sizes and sizes["embed_dim"] % sizes["num_heads"]:
            raise TrainConfigError(f"embed_dim {sizes['embed_dim']} must be divisible by num_heads "
                                   f"{sizes['num_heads']}.")
        try:
            variant.config(self.preset, **self.model_args)
        except (TypeError, ValueError) as e:
            raise TrainConfigError(f"Invalid {self.arch} option in model_args: {e}") from None
        if self.track_indicators and not variant.vit_compatible:
            raise TrainConfigError(f"track_indicators needs a ViT-compatible variant; {self.arch!r} is not one.")
        if self.distill not in DISTILL_MODES:
            raise TrainConfigError(f"distill must be 'hard' or 'soft'; got {self.distill!r}.")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise TrainConfigError(f"distill_weight must lie in [0, 1]; got {self.distill_weight}.")
        if not self.distill_temperature > 0:
            raise TrainConfigError(f"distill_temperature must be positive; got {self.distill_temperature}.")
        if self.teacher is not None and not Path(self.teacher).is_dir():
            raise TrainConfigError(f"teacher {self.teacher} is not a directory; train one with 'xvit train-teacher "
                                   "--out DIR' and pass that DIR.")
        if self.init not in INITS:
            raise TrainConfigError(f"init must be 'default' or 'mimetic'; got {self.init!r}.")
        if self.init == "mimetic" and not variant.vit_compatible:
            raise TrainConfigError(f"init='mimetic' needs a ViT-compatible variant; {self.arch!r} is not one.")
        if self.init == "mimetic" and sizes.get("embed_dim", 0) % 4:
            raise TrainConfigError(f"init='mimetic' (sin-cos position embedding) needs embed_dim divisible by 4; "
                                   f"got {sizes.get('embed_dim')}.")
        if self.low_res_epochs and (not self.low_res_size or self.low_res_size % self.patch_size):
            raise TrainConfigError(f"low_res_size must be a multiple of patch_size {self.patch_size}; got "
                                   f"{self.low_res_size}.")
        variant_name = shapes_variant(self.data)
        if variant_name is None:
            if self.token_loss:
                raise TrainConfigError("token_loss needs the ground-truth masks of xvit-shapes data.")
            parse_data_spec(self.data)  # raises DataSpecError, or DataNotFoundError for a missing path
        elif self.batch_size > self.train_size:
            raise TrainConfigError(f"batch_size {self.batch_size} exceeds the {self.train_size} training images.")


def shapes_variant(data: str) -> str | None:
    """The xvit-shapes variant of a ``data`` spec (``single`` or ``spurious``), or None for other data."""
    spec = _shapes_spec(data)
    return None if spec is None else spec[0]


def shapes_marker(data: str) -> str | None:
    """The marker policy of the training and validation images of an ``xvit-shapes:spurious:marker=MODE`` spec
    (:func:`xvit.data.shapes.resolve_marker_mode` checks it), or None for the split's default (``correlated``)."""
    spec = _shapes_spec(data)
    return None if spec is None else spec[1]


def _shapes_spec(data: str) -> tuple[str, str | None] | None:
    if not data.startswith(SHAPES_PREFIX):
        return None
    variant, *options = data[len(SHAPES_PREFIX):].split(":")
    if variant == "pair":
        raise TrainConfigError("xvit-shapes:pair has two labels per image; train on 'single' or 'spurious'.")
    if variant not in ("single", "spurious"):
        raise TrainConfigError(f"Unknown xvit-shapes variant {variant!r}; use xvit-shapes:single or "
                               "xvit-shapes:spurious.")
    marker = None
    for option in options:
        key, sep, value = option.partition("=")
        if key != "marker" or not sep:
            raise TrainConfigError(f"Unknown option {option!r} in {data!r}; training specs take one option, "
                                   "marker=MODE (e.g. xvit-shapes:spurious:marker=exclusive).")
        try:
            marker = resolve_marker_mode(variant, "train", value)
        except ValueError as error:
            raise TrainConfigError(f"{error} (in {data!r})") from None
    return variant, marker
