"""Runs: set a run up from a config (:mod:`.setup`), train it and write its directory
(:mod:`.train`), read run directories back (:mod:`.files`), and predict without training
(:mod:`.optimize`)."""

from .files import SavedRun, load_run
from .prediction import OptimizeResult, optimize
from .setup import Setup, config_dataset, prepare
from .training import TrainResult, train

__all__ = ["Setup", "prepare", "config_dataset", "TrainResult", "train", "SavedRun", "load_run", "OptimizeResult",
           "optimize"]
