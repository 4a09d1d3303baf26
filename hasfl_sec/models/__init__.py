"""Split-ready models: named blocks, a registry of architectures and measured cost profiles.

* :class:`SplitModel` -- a network as ``L`` named blocks with client/server views at any cut.
* :data:`MODELS` / :func:`build_model` -- the model zoo (``hecnn`` default, ``vgg16``, ``resnet18``,
  ``vit-tiny``, ``gpt-char``).
* :func:`profile_model` -- per-block and per-cut FLOPs, smashed-data size, parameter and
  activation memory, measured by running the model.
"""

from . import gpt, vit  # noqa: F401  (register gpt-char and vit-tiny in MODELS)
from .profile import BlockProfile, CutProfile, ModelProfile, profile_model
from .split import NORMS, SplitModel, group_norm_groups, make_norm2d
from .zoo import DEFAULT_MODEL, HECNN_DEFAULT_WIDTH, MODELS, build_model

__all__ = [
    "SplitModel",
    "NORMS",
    "make_norm2d",
    "group_norm_groups",
    "MODELS",
    "DEFAULT_MODEL",
    "HECNN_DEFAULT_WIDTH",
    "build_model",
    "BlockProfile",
    "CutProfile",
    "ModelProfile",
    "profile_model",
]
