"""The measuring side: cases, sweeps, models, freeze mechanisms and the measurement passes.

Imports torch; never pandas or matplotlib (``tests/test_layers.py`` checks every module).
"""
