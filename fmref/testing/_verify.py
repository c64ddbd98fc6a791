"""Check one implementation against loaded golden-vector cases; build the pass/fail report."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, final

import numpy as np

from ..marginals import QUANTITY_ALIASES
from ._compare import TOLERANCES, back, compare, dtype_name

Impl = Callable[[str, dict[str, Any], dict[str, np.ndarray]], Any]
Status = Literal["pass", "fail", "skip", "error"]

#: fmref 0.1's name of each renamed quantity, asked of an implementation that skips the new one.
_OLD_NAME = {new: old for old, new in QUANTITY_ALIASES.items()}


def _ask(impl: Impl, q: str, params: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
    """``impl``'s answer for ``q`` (None when it implements it under neither name)."""
    for name in (q, _OLD_NAME.get(q)):
        if name is None:
            return None
        try:
            out = impl(name, dict(params), {k: v.copy() for k, v in inputs.items()})
        except NotImplementedError:
            out = None
        if out is not None:
            if name != q:
                warnings.warn(
                    f"impl answered fmref 0.1's quantity name {name!r}; answer {q!r} instead",
                    DeprecationWarning,
                    stacklevel=4,
                )
            return out
    return None


@final
@dataclass(frozen=True)
class VerifyRow:
    """One (case, quantity) check: status, worst error ratio, where, and a message."""

    case: str
    quantity: str
    status: Status
    ratio: float | None = None
    row: int | None = None
    t: float | None = None
    rtol: float | None = None
    atol: float | None = None
    message: str = ""


@final
@dataclass(frozen=True)
class VerifyReport:
    """All checks of one :func:`fmref.testing.verify_suite` run."""

    rows: tuple[VerifyRow, ...]

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.rows)

    @property
    def passed(self) -> bool:
        """Nothing failed or raised, and at least one check ran."""
        return self.count("pass") > 0 and self.count("fail") == 0 and self.count("error") == 0

    def table(self) -> str:
        """Format the report as a fixed-width pass/fail table with a summary line."""
        head = f"{'case':<22} {'quantity':<13} {'status':<6} {'worst err/tol':>13} {'at t':>6}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            ratio = "" if r.ratio is None else f"{r.ratio:13.3g}"
            t = "" if r.t is None else f"{r.t:6.3g}"
            line = f"{r.case:<22} {r.quantity:<13} {r.status.upper():<6} {ratio:>13} {t:>6}"
            lines.append(line + (f"  {r.message}" if r.message else ""))
        summary = ", ".join(f"{self.count(s)} {s}" for s in ("pass", "fail", "error", "skip"))
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"{verdict}: {summary}")
        return "\n".join(lines)


def check_case(
    case_id: str,
    params: dict[str, Any],
    inputs: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    impl: Impl,
    quantities: tuple[str, ...],
    tolerances: dict[str, tuple[float, float]],
    rtol: float | None,
    atol: float | None,
) -> list[VerifyRow]:
    """Run ``impl`` for each quantity of one case and compare where the expected is defined."""
    rows = []
    for q in quantities:
        exp = expected[q]
        try:
            out = _ask(impl, q, params, inputs)
        except Exception as exc:  # the user's code: report, do not crash the table
            rows.append(VerifyRow(case_id, q, "error", message=f"{type(exc).__name__}: {exc}"))
            continue
        if out is None:
            rows.append(VerifyRow(case_id, q, "skip", message="not implemented"))
            continue
        try:
            act = back(out, "impl", exp.shape)
        except (TypeError, ValueError) as exc:
            rows.append(VerifyRow(case_id, q, "error", message=str(exc)))
            continue
        name = dtype_name(getattr(out, "dtype", "float64"))
        r0, a0 = tolerances.get(name, TOLERANCES.get(name, TOLERANCES["float32"]))
        rt, at = (r0 if rtol is None else rtol), (a0 if atol is None else atol)
        # NaN in the expected values marks rows where the quantity is undefined.
        keep = np.isfinite(exp).reshape(exp.shape[0], -1).all(axis=1)
        idx = np.flatnonzero(keep)
        if idx.size == 0:  # nothing defined to compare: not a pass
            rows.append(VerifyRow(case_id, q, "skip", message="undefined at every row"))
            continue
        e2, a2 = exp[keep].reshape(idx.size, -1), act[keep].reshape(idx.size, -1)
        cmp = compare(a2, e2, rt, at)
        row = int(idx[cmp.row])
        t = float(inputs["t"][row])
        status: Status = "pass" if cmp.ratio <= 1.0 else "fail"
        msg = ""
        if status == "fail":
            j = cmp.column or 0
            msg = f"row {row}: expected {e2[cmp.row, j]:.10g}, got {a2[cmp.row, j]:.10g}"
        rows.append(VerifyRow(case_id, q, status, cmp.ratio, row, t, rt, at, msg))
    return rows
