"""``python -m bench_lib report|compare ...``: the analysing side's command line."""

from .analysis.cli import main

raise SystemExit(main())
