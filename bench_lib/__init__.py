"""freeze-bench: what freezing layers costs and saves in a PyTorch training step, and which
way of freezing is correct.

Two layers and what they share:

* :mod:`bench_lib.measuring` imports torch (never pandas or matplotlib);
* :mod:`bench_lib.analysis` imports pandas and matplotlib (never torch);
* :mod:`bench_lib.vocab` (axis names), :mod:`bench_lib.record` (the record schema) and
  :mod:`bench_lib.journal` (the JSON-lines journal) are plain Python, read by both.
"""
