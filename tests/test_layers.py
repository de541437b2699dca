"""The two layers stay apart: every module is imported in a fresh interpreter, and the libraries
of the other side must not come with it. Import cycles fail here too (a cycle through a
module-level import leaves a partly initialised module and an ImportError)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import bench_lib

ROOT = Path(bench_lib.__file__).parent
SHARED = (
    "bench_lib",
    "bench_lib.axes",
    "bench_lib.vocab",
    "bench_lib.record",
    "bench_lib.journal",
    "bench_lib.precision",
)
FORBIDDEN = {
    "bench_lib.measuring": ("pandas", "matplotlib"),
    "bench_lib.analysis": ("torch",),
    # advise runs the measuring side and draws through the analysing side in a subprocess.
    "bench_lib.advise": ("pandas", "matplotlib"),
    "shared": ("torch", "pandas", "matplotlib", "numpy"),
}


def _modules(package: str) -> list[str]:
    path = ROOT / package.split(".", 1)[1].replace(".", "/")
    found = [package]
    for info in pkgutil.walk_packages([str(path)], prefix=f"{package}."):
        found.append(info.name)
    return found


CASES = [(m, "bench_lib.measuring") for m in _modules("bench_lib.measuring")]
CASES += [(m, "bench_lib.analysis") for m in _modules("bench_lib.analysis")]
CASES += [(m, "bench_lib.advise") for m in _modules("bench_lib.advise")]
CASES += [(m, "shared") for m in SHARED]


def test_every_module_is_checked() -> None:
    on_disk = {
        p.relative_to(ROOT.parent).with_suffix("").as_posix().replace("/", ".")
        for p in ROOT.rglob("*.py")
        if p.name not in ("__main__.py",)
    }
    on_disk = {m.removesuffix(".__init__") for m in on_disk}
    assert on_disk == {m for m, _ in CASES}


@pytest.mark.parametrize(("module", "side"), CASES, ids=[m for m, _ in CASES])
def test_module_imports_nothing_from_the_other_side(module: str, side: str) -> None:
    banned = FORBIDDEN[side]
    code = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        f"banned = {banned!r}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in banned)\n"
        "print(','.join(sorted({m.split('.')[0] for m in bad})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"{module} ({side}) pulls in {out.stdout.strip()}"
