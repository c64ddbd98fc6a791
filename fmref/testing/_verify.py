"""Check one implementation against loaded golden-vector cases; build the pass/fail report."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, final
from xml.sax.saxutils import quoteattr

import numpy as np

from ..marginals import QUANTITY_ALIASES
from ._compare import (
    TOLERANCES,
    UNIT_ROUNDOFF,
    allowance,
    back,
    compare,
    dtype_name,
    fmt,
    per_time_counts,
    ratios,
)

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
    """One (case, quantity) check: status, worst error ratio, where, and a message.

    ``x``, ``expected`` and ``actual`` are the worst row's input point and full output
    vectors (flattened); ``by_time`` counts the failing rows at each time.
    """

    case: str
    quantity: str
    status: Status
    ratio: float | None = None
    row: int | None = None
    t: float | None = None
    rtol: float | None = None
    atol: float | None = None
    message: str = ""
    x: tuple[float, ...] | None = None
    expected: tuple[float, ...] | None = None
    actual: tuple[float, ...] | None = None
    by_time: str = ""


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

    def summary(self) -> str:
        """The verdict line: "PASSED: 168 pass, 0 fail, 0 error, 0 skip"."""
        counts = ", ".join(f"{self.count(s)} {s}" for s in ("pass", "fail", "error", "skip"))
        return f"{'PASSED' if self.passed else 'FAILED'}: {counts}"

    def table(self, *, failures_only: bool = False) -> str:
        """Format the report as a fixed-width pass/fail table with a summary line.

        ``failures_only``: list only the failed and errored rows (``fmref verify``'s default).
        """
        head = f"{'case':<22} {'quantity':<20} {'status':<6} {'worst err/tol':>13} {'at t':>6}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            if failures_only and r.status not in ("fail", "error"):
                continue
            ratio = "" if r.ratio is None else f"{r.ratio:13.3g}"
            t = "" if r.t is None else f"{r.t:6.3g}"
            line = f"{r.case:<22} {r.quantity:<20} {r.status.upper():<6} {ratio:>13} {t:>6}"
            lines.append(line + (f"  {r.message}" if r.message else ""))
        lines.append(self.summary())
        return "\n".join(lines)

    def to_json(self) -> str:
        """The report as JSON: ``passed``, the counts and every row (NaN and inf as strings)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not np.isfinite(v):
                return str(v)
            if isinstance(v, (list, tuple)):
                return [clean(u) for u in v]
            return v

        rows = [{k: clean(v) for k, v in asdict(r).items()} for r in self.rows]
        doc = {
            "passed": self.passed,
            "counts": {s: self.count(s) for s in ("pass", "fail", "error", "skip")},
            "rows": rows,
        }
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

    def to_junit(self, name: str = "fmref verify") -> str:
        """The report as JUnit XML: one testcase per (case, quantity), for CI dashboards."""
        out = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<testsuites><testsuite name={quoteattr(name)} tests="{len(self.rows)}" '
            f'failures="{self.count("fail")}" errors="{self.count("error")}" '
            f'skipped="{self.count("skip")}">',
        ]
        for r in self.rows:
            case = f"<testcase classname={quoteattr(r.case)} name={quoteattr(r.quantity)}"
            if r.status == "pass":
                out.append(case + "/>")
                continue
            tag = {"fail": "failure", "error": "error", "skip": "skipped"}[r.status]
            out.append(f"{case}><{tag} message={quoteattr(r.message or r.status)}/></testcase>")
        out.append("</testsuite></testsuites>")
        return "\n".join(out) + "\n"


def _vec(a: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1))


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
    *,
    precision: str = "float64",
    cond: Mapping[str, np.ndarray] | None = None,
) -> list[VerifyRow]:
    """Run ``impl`` for each quantity of one case and compare where the expected is defined.

    Tolerances are those of ``precision`` (the manifest's, else the default table), plus the
    conditioning allowance from ``cond`` (``<quantity>_cond`` arrays); a result of lower
    precision than ``precision`` fails, saying so.
    """
    rows = []
    r0, a0 = tolerances.get(precision, TOLERANCES[precision])
    rt, at = (r0 if rtol is None else rtol), (a0 if atol is None else atol)
    for q in quantities:
        if q not in expected:
            continue
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
        got = dtype_name(getattr(out, "dtype", "float64"))
        if UNIT_ROUNDOFF.get(got, UNIT_ROUNDOFF["float32"]) > UNIT_ROUNDOFF[precision]:
            msg = (
                f"returned {got}, the check asks for {precision}; compute in {precision} or "
                f"verify at precision={got!r} (--precision {got})"
            )
            rows.append(VerifyRow(case_id, q, "fail", rtol=rt, atol=at, message=msg))
            continue
        # NaN in the expected values marks rows where the quantity is undefined.
        keep = np.isfinite(exp).reshape(exp.shape[0], -1).all(axis=1)
        idx = np.flatnonzero(keep)
        if idx.size == 0:  # nothing defined to compare: not a pass
            rows.append(VerifyRow(case_id, q, "skip", message="undefined at every row"))
            continue
        e2, a2 = exp[keep].reshape(idx.size, -1), act[keep].reshape(idx.size, -1)
        c = None if cond is None or q not in cond else cond[q][keep].reshape(idx.size, -1)
        extra = None if c is None else allowance(c, precision)
        cmp = compare(a2, e2, rt, at, 1.0, extra)
        row = int(idx[cmp.row])
        t = float(inputs["t"][row])
        status: Status = "pass" if cmp.ratio <= 1.0 else "fail"
        msg, by_time = "", ""
        vecs: dict[str, Any] = {}
        if status == "fail":
            bad = np.asarray((ratios(a2, e2, rt, at, extra) > 1.0).any(axis=1))
            by_time = per_time_counts(bad, np.asarray(inputs["t"])[keep])
            xv = inputs["x"][row] if "x" in inputs else inputs["z"][row]
            vecs = {"x": _vec(xv), "expected": _vec(e2[cmp.row]), "actual": _vec(a2[cmp.row])}
            msg = (
                f"row {row}: x = {fmt(xv)}, expected {fmt(e2[cmp.row])}, got "
                f"{fmt(a2[cmp.row])}; failing rows by time: {by_time}"
            )
        rows.append(
            VerifyRow(case_id, q, status, cmp.ratio, row, t, rt, at, msg, by_time=by_time, **vecs)
        )
    return rows
