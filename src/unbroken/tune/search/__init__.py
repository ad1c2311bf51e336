"""Ray Tune's search names (``ray.tune.search``): the basic variant generator and Optuna."""

from ...sweep.searchers import BasicSearcher as BasicVariantGenerator
from ...sweep.searchers import Searcher

__all__ = ["BasicVariantGenerator", "Searcher"]
