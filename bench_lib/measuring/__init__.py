"""The measuring side: cases, sweeps, models, freeze mechanisms and the measurement passes.

Imports torch; never pandas or matplotlib (``tests/test_layers.py`` checks every module).
"""

# A Case counts its blocks through the families (registered on import; see spec.n_blocks).
from . import families as _families  # noqa: F401
