"""The trap mechanisms: how often each was wrong, and why passing in a case proves nothing."""

from __future__ import annotations

from ...vocab import TRAP_MECHANISMS
from ..format import Row, code, plural
from ..ranking import TRAP_FRAGILITY, valid_traps
from ..results import mechanism_order
from . import Facts, Finding, Needs, register
from .common import validity_summary


def _split(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """(measured, raised or failed) rows."""
    return [r for r in rows if r["status"] == "ok"], [r for r in rows if r["status"] != "ok"]


def _first_sentence(text: object) -> str:
    return str(text).partition(". ")[0].rstrip(".")


@register
class Traps(Finding):
    name = "traps"
    order = 70
    title = "Traps: mechanisms that are wrong in some setting"
    label = "Traps (never ranked)"
    needs = Needs(where={"mechanism": TRAP_MECHANISMS}, columns=("verdict",), failed=True)

    def _by_mechanism(self, f: Facts) -> dict[str, list[Row]]:
        rows = self.rows(f)
        return {
            m: [r for r in rows if r["mechanism"] == m]
            for m in mechanism_order(r["mechanism"] for r in rows)
        }

    def summary(self, f: Facts) -> str:
        parts = []
        for mech, rows in self._by_mechanism(f).items():
            ok, failed = _split(rows)
            valid = len(valid_traps(ok))
            parts.append(
                f"`{mech}` valid in {valid} of {len(rows)}"
                + (f", raised or failed in {len(failed)}" if failed else "")
            )
        return (
            "; ".join(parts) + ". Where one passed, it passed by luck of the case (see "
            "the traps section), so none is ever named the cheapest valid way."
        )

    def detail(self, f: Facts) -> list[str]:
        groups = self._by_mechanism(f)
        if not groups:
            return [
                "No trap mechanism was measured in this run (select them with "
                f"`--bench-mechanism {','.join(TRAP_MECHANISMS)}`)."
            ]
        lines = [
            "Each trap is a way of freezing that looks right and is wrong in some setting. The "
            "report never ranks one, not even where it passed the validity check.",
            "",
        ]
        for mech, rows in groups.items():
            ok, failed = _split(rows)
            text = f"- **`{mech}`** ({plural(len(rows), 'case')}): "
            text += validity_summary(ok) if ok else "none measured"
            if failed:
                messages = sorted(
                    {_first_sentence(r.get("status_message") or r["status"]) for r in failed}
                )
                text += f"; raised or failed in {len(failed)} ({'; '.join(messages)})"
            passed = valid_traps(ok)
            if passed:
                text += (
                    f". Passed in {', '.join(code(r['case_id']) for r in passed)}, and still "
                    f"fragile: {TRAP_FRAGILITY.get(mech, 'it is wrong in other settings')}"
                )
            lines.append(text + ".")
        return lines
