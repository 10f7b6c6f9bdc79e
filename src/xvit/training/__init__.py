"""Training registered model variants on xvit-shapes or labelled data, and their model cards.

:func:`train` runs a :class:`TrainConfig` with optional :class:`Callback` hooks and writes an xvit checkpoint;
:func:`write_model_card` writes its ``MODEL_CARD.md``. The command line is ``xvit train``. :func:`train_teacher`
(``xvit train-teacher``) trains a small CNN that ``TrainConfig(teacher=DIR)`` distils from.
"""

from xvit.training.accuracy import shapes_accuracy, shapes_predictions
from xvit.training.callbacks import Callback, ConsoleLog, JsonlLog, ProgressBar
from xvit.training.card import write_model_card
from xvit.training.config import TrainConfig, TrainConfigError
from xvit.training.init import mimetic_init_, sincos_pos_embed
from xvit.training.loop import train
from xvit.training.svda_tracking import IndicatorTracking
from xvit.training.teacher import TeacherCNN, TeacherConfig, distillation_loss, load_teacher, train_teacher

__all__ = ["TrainConfig", "TrainConfigError", "train", "Callback", "ProgressBar", "ConsoleLog", "JsonlLog",
           "shapes_accuracy", "shapes_predictions", "mimetic_init_", "sincos_pos_embed", "write_model_card",
           "IndicatorTracking", "TeacherCNN", "TeacherConfig", "train_teacher", "load_teacher", "distillation_loss"]
