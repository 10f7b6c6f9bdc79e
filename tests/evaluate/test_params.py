import pytest

from xvit.evaluate import (
    ClassSensitivity,
    Conservation,
    DeletionInsertion,
    EnergyPointingGame,
    MarkerShare,
    Perturbation,
    PointingGame,
    Randomization,
)
from xvit.params import InvalidParameterError

from .stubs import HALF, grad_x_input

NORM = {"mean": HALF, "std": HALF}

BAD = [
    (Perturbation, {"mean": HALF, "std": (0.5, 0.0, 0.5)}, "std"),
    (Perturbation, {"mean": "imagenet", "std": HALF}, "mean"),
    (Perturbation, {**NORM, "mode": "pos"}, "mode"),
    (Perturbation, {**NORM, "fractions": (0.5, 0.2)}, "fractions"),
    (Perturbation, {**NORM, "fractions": (0.5, 1.5)}, "fractions"),
    (Perturbation, {**NORM, "batch_size": 0}, "batch_size"),
    (DeletionInsertion, {"mode": "del"}, "mode"),
    (DeletionInsertion, {"preset": "torchray"}, "preset"),
    (DeletionInsertion, {"substrate": "zero"}, "substrate"),
    (DeletionInsertion, {"pixels_per_step": 0}, "pixels_per_step"),
    (DeletionInsertion, {"steps": 2.5}, "steps"),
    (DeletionInsertion, {"steps": 10, "pixels_per_step": 4}, "steps"),
    (DeletionInsertion, {"substrate": "black"}, "mean"),
    (PointingGame, {"tol": -1}, "tol"),
    (PointingGame, {"max_overlap": 0}, "max_overlap"),
    (EnergyPointingGame, {"normalise": "yes"}, "normalise"),
    (EnergyPointingGame, {"max_overlap": 1.5}, "max_overlap"),
    (ClassSensitivity, {"normalise": 1}, "normalise"),
    (MarkerShare, {"normalise": "yes"}, "normalise"),
    (MarkerShare, {"shortcut_class": -1}, "shortcut_class"),
    (MarkerShare, {"shortcut_class": 0.5}, "shortcut_class"),
    (Randomization, {"explain_fn": "grad"}, "explain_fn"),
    (Randomization, {"explain_fn": grad_x_input, "units": "layers"}, "units"),
    (Randomization, {"explain_fn": grad_x_input, "units": [("head", "head")]}, "units"),
    (Randomization, {"explain_fn": grad_x_input, "mode": "cascade"}, "mode"),
    (Randomization, {"explain_fn": grad_x_input, "seed": -1}, "seed"),
    (Conservation, {"start": "zero"}, "start"),
    (Conservation, {"threshold": -0.1}, "threshold"),
]


@pytest.mark.parametrize(("cls", "params", "name"), BAD, ids=[f"{c.__name__}-{n}" for c, _, n in BAD])
def test_bad_parameters_raise_naming_the_parameter(cls, params, name):
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of {cls.name}"):
        cls(**params)
