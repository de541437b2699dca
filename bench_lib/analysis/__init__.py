"""The analysing side: benchmark JSON in; tables, findings, figures, reports and comparisons out.

Imports pandas and matplotlib; never torch (``tests/test_layers.py`` checks every module), so a
report can be made on a machine without torch.
"""
