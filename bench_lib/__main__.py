"""``python -m bench_lib``: see :mod:`bench_lib.cli`."""

from .cli import main

raise SystemExit(main())
