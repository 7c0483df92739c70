"""Unlearning Studio core library.

Remove what an image classifier learned from a chosen group of samples without retraining,
using the perturbed sign gradient (PSG) boundary unlearning of Nahass et al.
(arXiv 2505.21872), and measure that it worked. This package never imports Streamlit
outside :mod:`unlearn_core.ui`.
"""

from unlearn_core.errors import UserError

__all__ = ["UserError", "__version__"]
__version__ = "0.1.0"
