"""The fields that ask how the original model was trained, when its file does not say.

Why: the retrain reference must be trained with the original's own recipe; a user's weights
file without a recorded recipe leaves only the user who knows it. The fields mirror
:class:`~unlearn_core.runs.recipe.Recipe` and start on the ``train`` command's defaults.
"""

from __future__ import annotations

import streamlit as st

from unlearn_core.runs.recipe import Recipe
from unlearn_core.ui.widgets import sticky

PREFIX = "ul_recipe_"


def recipe_fields(arch: str) -> Recipe:
    """Widgets for the recipe of a model of architecture ``arch``; returns the recipe typed in."""
    default = Recipe()
    cols = st.columns(3)
    epochs = cols[0].number_input("Epochs", 1, 1000, step=1, key=sticky(PREFIX + "epochs", default.epochs),
                                  help="Passes over the training images when the original was trained.")
    lr = cols[1].number_input("Learning rate", 1e-6, 10.0, format="%g", step=0.01, key=sticky(PREFIX + "lr", default.lr),
                              help="Peak learning rate of SGD (one-cycle schedule, as `train` uses).")
    batch = cols[2].number_input("Batch size", 1, 4096, step=1, key=sticky(PREFIX + "batch_size", default.batch_size),
                                 help="Images per SGD step.")
    cols = st.columns(3)
    momentum = cols[0].number_input("Momentum", 0.0, 0.999, format="%g", step=0.05,
                                    key=sticky(PREFIX + "momentum", default.momentum))
    decay = cols[1].number_input("Weight decay", 0.0, 1.0, format="%g", step=1e-4,
                                 key=sticky(PREFIX + "weight_decay", default.weight_decay), help="L2 penalty of SGD.")
    cols[2].selectbox("Architecture", [arch], key=PREFIX + "arch", disabled=True,
                      help="The reference always has the model's own architecture.")
    return Recipe(arch=arch, epochs=int(epochs), batch_size=int(batch), lr=float(lr), momentum=float(momentum),
                  weight_decay=float(decay))
