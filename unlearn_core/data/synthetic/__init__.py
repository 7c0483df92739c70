"""Honest synthetic clinical image sets: every metadata value is drawn into its image.

* :func:`generate_oculoplastic`: periocular photographs (healthy, ptosis, thyroid eye
  disease) drawn to scale, with the lid opening ``vpf_mm`` and ``mrd1_mm`` as drawn.
* :func:`generate_fundus`: colour fundus photographs (diabetic retinopathy, glaucoma, normal)
  from three devices, each with a visible signature.
"""

from unlearn_core.data.synthetic.common import SyntheticSet
from unlearn_core.data.synthetic.fundus import generate_fundus
from unlearn_core.data.synthetic.oculoplastic import generate_oculoplastic

__all__ = ["SyntheticSet", "generate_fundus", "generate_oculoplastic"]
