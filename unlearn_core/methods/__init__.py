"""Unlearning methods, one module each, all behind :class:`~unlearn_core.methods.base.UnlearnMethod`.

Importing this package imports every method module, so the registry is complete.
"""

# In listing order (``list_methods``, ``methods``); each module registers its method.
from unlearn_core.methods import (  # noqa: F401, I001
    retrain, psg, finetune, gradient_ascent, neggrad_plus, random_labels, boundary_expanding, scrub, l1_sparse,
    salun, cf_k, eu_k,
)
from unlearn_core.methods.base import (
    METHODS, CommonConfig, UnlearnData, UnlearnMethod, UnlearnResult, get_method, list_methods, register,
)

__all__ = ["METHODS", "CommonConfig", "UnlearnData", "UnlearnMethod", "UnlearnResult", "get_method",
           "list_methods", "register"]
