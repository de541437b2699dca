"""``freeze-bench advise MODEL``: measure the ways to freeze one model and answer on one screen.

A package of its own, imported lazily by :mod:`bench_lib.analysis.cli` (its ``advise``
subcommand), so that the analysing side never imports torch at import time. Modules:

* :mod:`.errors`: the one-line errors and their exit codes (plain Python);
* :mod:`.freezespec`: the ``--freeze`` parser (plain Python);
* :mod:`.loading`: MODEL resolution (directory, cached hub id, factory), dropout off, block
  discovery, inputs and labels, and the factory the suite's processes rebuild the model from
  (torch, never matplotlib);
* :mod:`.running`: the suite's own cases through pytest in a subprocess, with a progress line;
* :mod:`.screen`: verdicts, the equivalent set and the one screen, from the run's records
  (plain Python); :mod:`.snippet`: the code that applies the recommendation;
* :mod:`.cli`: argument parsing and the command itself.
"""

from __future__ import annotations

__all__: list[str] = []
