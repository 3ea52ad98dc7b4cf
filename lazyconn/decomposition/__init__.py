"""Multi-subject decompositions with nilearn's names: :class:`CanICA` and :class:`DictLearning`.

The per-subject reductions run lazily and in parallel on the group engine; the group step
is scikit-learn's, as in nilearn.
"""

from lazyconn.decomposition.canica import CanICA
from lazyconn.decomposition.dict_learning import DictLearning

__all__ = ["CanICA", "DictLearning"]
