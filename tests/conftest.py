"""Shared test fixtures. Tests run offline: no hub access, no downloads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import xvit  # noqa: E402,F401  (installs the torchvision import shim before timm/transformers load)
from xvit._compat.torchvision_ops import ensure_torchvision_importable  # noqa: E402

ensure_torchvision_importable()
