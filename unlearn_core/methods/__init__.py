"""Unlearning methods, one module each, all behind :class:`~unlearn_core.methods.base.UnlearnMethod`.

Importing this package imports every method module so the registry is complete. A module
that is missing (still being written) is skipped rather than breaking the others.
"""

import importlib

from unlearn_core.methods.base import (
    METHODS, CommonConfig, UnlearnData, UnlearnMethod, UnlearnResult, get_method, list_methods, register,
)

METHOD_MODULES = (
    "retrain", "psg", "finetune", "gradient_ascent", "neggrad_plus", "random_labels",
    "boundary_expanding", "scrub", "l1_sparse", "salun", "cf_k", "eu_k",
)

for _module in METHOD_MODULES:
    try:
        importlib.import_module(f"unlearn_core.methods.{_module}")
    except ModuleNotFoundError as _error:
        if _error.name != f"unlearn_core.methods.{_module}":
            raise

__all__ = ["METHODS", "CommonConfig", "UnlearnData", "UnlearnMethod", "UnlearnResult", "get_method",
           "list_methods", "register"]
