"""Grade any vector field against the exact answer: :func:`report`.

One call measures a field ``field(x, t)`` (a trained network of any array library, a closure,
a bound method) against the exact marginal path of Gaussian-mixture data, with the functions
of :mod:`fmref.losses`, :mod:`fmref.metrics`, :mod:`fmref.likelihood` and
:mod:`fmref.samplers`:

- the FM loss L_FM = E||u^θ − u||² and the relative FM loss L_FM / E||u||², with its per-t
  profile; the best scalar fit u^θ ≈ c u (reported when c < 0, a flipped sign, or when c
  differs from 1 significantly and by more than 1%, a scaled field);
- the irreducible CFM loss L* and the identity E L_CFM = L_FM + L* on common random numbers
  (a deterministic field of (x, t) satisfies it whatever its quality, so a gap means the field
  is not one: dropout left on, hidden state, noise);
- exact log p_data of its ODE samples against the data's own mean;
- KL(p_data ‖ p_model) = E_{p_data}[log p_data − log p_model] through the likelihood ODE, with
  the field's exact divergence when it has one, Hutchinson's estimate otherwise;
- per-mode coverage of its samples against exact samples' coverage, with z-scores;
- energy distance to exact data samples against its null distribution;
- figures (2-D data) and a JSON + Markdown record, each written atomically.

The verdict names every discrepancy it finds with its size and uncertainty ("mode weights
drift: component 3 at 0.104 ± 0.004, expected 0.125"); when it finds none it says what was
measured and at which sample sizes, since a finite sample bounds a discrepancy, never
excludes it. Nothing here prints: ``progress(stage, done, total)`` reports the stages.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, final

import numpy as np

from ._checkpoint import atomic_write
from ._ode import bound_owner
from ._xp import Array, device, from_numpy, namespace, to_numpy
from .likelihood import Hutchinson, log_likelihood
from .losses import LossEstimate, cfm_floor, cfm_loss, fm_loss
from .marginals import MarginalPath
from .metrics import LogProbComparison, compare_log_prob, coverage, energy_distance, energy_null
from .mixtures import rng_from
from .samplers import sample

__all__ = ["Finding", "Report", "report"]

Field = Callable[[Array, Array], Array]
Progress = Callable[[str, int, int], None]

#: A relative FM loss below this is rounding, not a finding: an RMS relative error of 1e-5,
#: far above what float64 or float32 arithmetic leaves (an independent float64 implementation
#: of the exact field measures ~1e-31), far below any trained network.
FM_ROUNDING = 1e-10

_STAGES = (
    "losses",
    "scale",
    "samples",
    "log p_data",
    "KL",
    "coverage",
    "energy distance",
    "figures",
)


@final
@dataclass(frozen=True)
class Finding:
    """One discrepancy: ``check`` (a short key), ``message`` (a sentence with the numbers)."""

    check: str
    message: str


@final
@dataclass(frozen=True)
class Report:
    """What :func:`report` measured; every number comes with its standard error.

    name, marginal, dim : the model's name, ``repr`` of the exact marginal path, d.
    fm, cfm, floor : :class:`~fmref.losses.LossEstimate` of L_FM, L_CFM and L* (common
        random numbers; fmref's scale, summed over the d coordinates: divide by d for
        torchcfm's, flow_matching's and diffusers' mean-over-coordinates losses).
    identity, identity_stderr : mean of L_CFM − L_FM − L* per draw, 0 in expectation.
    scale, scale_stderr : c of the best fit u^θ ≈ c u (least squares over x ~ p_t).
    log_p : :class:`~fmref.metrics.LogProbComparison` of log p_data over its ODE samples vs
        exact data samples.
    kl, kl_stderr, kl_method : KL(p_data ‖ p_model) in nats and how div u^θ was obtained
        ("exact divergence" or "hutchinson"); None when skipped.
    shares, expected_shares, shares_stderr, shares_z : per component: share of its samples
        whose most likely component is k, the same share over exact data samples, the
        two-sample standard error and z-score.
    energy, energy_null_mean, energy_null_sd : energy distance to exact data samples and the
        mean/sd of its null distribution (exact vs exact, same sizes).
    n_samples, n_kl : ODE samples drawn and data points whose likelihood was solved.
    findings : every discrepancy found; verdict : one line naming them.
    files : paths written (JSON, Markdown, PNGs).
    """

    name: str
    marginal: str
    dim: int
    fm: LossEstimate
    cfm: LossEstimate
    floor: LossEstimate
    identity: float
    identity_stderr: float
    scale: float
    scale_stderr: float
    log_p: LogProbComparison
    kl: float | None
    kl_stderr: float | None
    kl_method: str | None
    shares: np.ndarray
    expected_shares: np.ndarray
    shares_stderr: np.ndarray
    shares_z: np.ndarray
    energy: float
    energy_null_mean: float
    energy_null_sd: float
    n_samples: int
    n_kl: int
    findings: tuple[Finding, ...]
    verdict: str
    files: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """Whether no discrepancy was found (at these sample sizes; see ``verdict``)."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-able data (non-finite floats become None)."""

        def num(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, np.ndarray):
                return [num(float(a)) for a in v.ravel()]
            v = float(v)
            return v if math.isfinite(v) else None

        def loss(e: LossEstimate) -> dict[str, Any]:
            return {
                "value": num(e.value),
                "stderr": num(e.stderr),
                "n": e.n,
                "t_max": e.t_max,
                "t_edges": num(e.t_edges),
                "profile": num(e.profile),
                "profile_stderr": num(e.profile_stderr),
                "relative": num(e.relative),
                "relative_stderr": num(e.relative_stderr),
                "warning": e.warning,
            }

        return {
            "name": self.name,
            "marginal": self.marginal,
            "verdict": self.verdict,
            "findings": [{"check": f.check, "message": f.message} for f in self.findings],
            "fm_loss": loss(self.fm),
            "cfm_loss": loss(self.cfm),
            "cfm_floor": loss(self.floor),
            "cfm_floor_per_coordinate": num(self.floor.value / self.dim),
            "identity": {"mean": num(self.identity), "stderr": num(self.identity_stderr)},
            "scale": {"c": num(self.scale), "stderr": num(self.scale_stderr)},
            "log_p_data": {
                "samples": num(self.log_p.mean),
                "samples_stderr": num(self.log_p.stderr),
                "data": num(self.log_p.reference_mean),
                "data_stderr": num(self.log_p.reference_stderr),
                "z": num(self.log_p.z),
            },
            "kl": {"value": num(self.kl), "stderr": num(self.kl_stderr), "method": self.kl_method},
            "coverage": {
                "shares": num(self.shares),
                "expected": num(self.expected_shares),
                "stderr": num(self.shares_stderr),
                "z": num(self.shares_z),
            },
            "energy_distance": {
                "value": num(self.energy),
                "null_mean": num(self.energy_null_mean),
                "null_sd": num(self.energy_null_sd),
            },
            "n_samples": self.n_samples,
            "n_kl": self.n_kl,
            "files": list(self.files),
        }

    def markdown(self) -> str:
        """Return the report as a Markdown page (the verdict, a table, the per-t profile)."""
        f, fl = self.fm, self.floor
        d = self.dim

        def pm(v: float | None, se: float | None, fmt: str = ".4g") -> str:
            if v is None or not math.isfinite(v):
                return "inf" if v is not None else "—"
            return f"{v:{fmt}} ± {se:.2g}" if se is not None and math.isfinite(se) else f"{v:{fmt}}"

        rows = [
            ("relative FM loss L_FM / E‖u‖²", pm(f.relative, f.relative_stderr)),
            ("FM loss L_FM (sum over coordinates)", pm(f.value, f.stderr)),
            ("best scalar fit u^θ ≈ c u", pm(self.scale, self.scale_stderr)),
            ("L* (sum over coordinates)", pm(fl.value, fl.stderr)),
            (
                f"L* per coordinate (÷ d = {d}; torchcfm/diffusers scale)",
                pm(fl.value / d, fl.stderr / d),
            ),
            (
                "E L_CFM − L_FM − L* (identity: 0)",
                pm(self.identity, self.identity_stderr)
                if math.isfinite(self.identity)
                else "not tested (L* infinite)",
            ),
            ("mean log p_data, ODE samples", pm(self.log_p.mean, self.log_p.stderr)),
            ("mean log p_data, data", pm(self.log_p.reference_mean, self.log_p.reference_stderr)),
            (f"KL(p_data ‖ p_model), {self.kl_method or 'skipped'}", pm(self.kl, self.kl_stderr)),
            (
                "energy distance (null mean ± sd)",
                f"{self.energy:.3g} ({self.energy_null_mean:.3g} ± {self.energy_null_sd:.2g})",
            ),
        ]
        lines = [
            f"# fmref report: {self.name}",
            "",
            f"Exact reference: `{self.marginal}`; {self.n_samples} ODE samples, "
            f"{f.n} loss draws, {self.n_kl} likelihood points.",
            "",
            f"**Verdict:** {self.verdict}",
            "",
            "| quantity | value |",
            "|---|---|",
            *[f"| {a} | {b} |" for a, b in rows],
            "",
            "## Per-mode coverage",
            "",
            "| component | share | expected | z |",
            "|---|---|---|---|",
            *[
                f"| {k} | {s:.4f} ± {se:.4f} | {e:.4f} | {z:+.1f} |"
                for k, (s, e, se, z) in enumerate(
                    zip(
                        self.shares,
                        self.expected_shares,
                        self.shares_stderr,
                        self.shares_z,
                        strict=True,
                    )
                )
            ],
            "",
            "## Per-t profile (sum over coordinates)",
            "",
            "| t | L_FM(t) | ℓ*(t) |",
            "|---|---|---|",
            *[
                f"| [{a:.2f}, {b:.2f}) | {p:.4g} | {q:.4g} |"
                for a, b, p, q in zip(
                    f.t_edges[:-1], f.t_edges[1:], f.profile, fl.profile, strict=True
                )
            ],
        ]
        if fl.warning:
            lines += ["", f"Note: {fl.warning}"]
        if self.files:
            lines += ["", "Figures: " + ", ".join(f"`{Path(p).name}`" for p in self.files)]
        return "\n".join(lines) + "\n"


def _mean_se(a: np.ndarray) -> tuple[float, float]:
    a = np.asarray(a, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(a.size))


def _has_divergence(field: Any) -> bool:
    return any(callable(getattr(c, "divergence", None)) for c in (field, bound_owner(field)))


def _convert(a: Any, like: Any) -> Any:
    if like is None:
        return a
    return from_numpy(np.asarray(a), namespace(like), device(like), like.dtype)


def _scale_fit(
    field: Field, mp: MarginalPath, n: int, g: np.random.Generator, like: Any
) -> tuple[float, float]:
    """Least-squares c of u^θ ≈ c u over t ~ U[0, 1), x ~ p_t, with its delta-method stderr."""
    t = g.random(n)
    x = mp.sample(n, t, rng=g)
    u = np.asarray(mp.vector_field(x, t), dtype=np.float64)
    v = np.asarray(to_numpy(field(_convert(x, like), _convert(t, like))), dtype=np.float64)
    a, b = np.sum(v * u, axis=1), np.sum(u * u, axis=1)
    c = float(a.mean() / b.mean())
    se = float((a - c * b).std(ddof=1) / (math.sqrt(n) * b.mean()))
    return c, se


def report(
    field: Field,
    marginal: MarginalPath,
    *,
    name: str | None = None,
    out: str | Path | None = None,
    n: int = 4096,
    n_samples: int = 4000,
    n_kl: int = 500,
    method: str = "rk4",
    steps: int = 100,
    t_max: float = 1.0,
    divergence: Any = None,
    like: Any = None,
    rng: Any = 0,
    z_threshold: float = 4.0,
    kl_tolerance: float = 1e-3,
    energy_repeats: int = 20,
    figures: bool = True,
    progress: Progress | None = None,
) -> Report:
    """Grade ``field(x, t)`` against the exact marginal path ``marginal``; see the module doc.

    Parameters
    ----------
    field : callable u^θ(x, t), x (n, d) and t (n,) in ``like``'s namespace and dtype (float64
        NumPy by default) → (n, d).
    marginal : the exact :class:`~fmref.marginals.MarginalPath` the field should learn.
    name : the model's name for titles and the verdict (default: the field's ``__name__``).
    out : a folder for ``report.json``, ``report.md`` and the figures (``report_profile.png``,
        ``report_coverage.png``; for 2-D data also ``report_samples.png`` and
        ``report_fields.png``); nothing is written when None.
    n : draws for the losses and the scale fit. n_samples : ODE samples. n_kl : data points
        whose log p_model is solved by the likelihood ODE (0 skips the KL).
    method, steps : the ODE solver of :func:`fmref.samplers.integrate` for samples and KL.
    t_max : losses over t ∈ [0, t_max) (below 1 where L* is infinite).
    divergence : callable div u^θ(x, t); default the field's (or its owner's) ``divergence``
        method if any, else Hutchinson's estimate with finite-difference JVPs.
    like : an array of the field's namespace, device and dtype (e.g. a torch tensor).
    rng : numpy Generator or int seed; every stage draws from its own child stream.
    z_threshold : a difference is reported when it exceeds this many standard errors (4 keeps
        false alarms below ~1e-4 per check). kl_tolerance : KL below this (nats) is not
        reported even when significant (the ODE solver's own error).
    energy_repeats : exact-vs-exact energy distances forming the null distribution.
    figures : draw the figures (needs matplotlib: ``pip install "fmref[plot]"``).
    progress : called as ``progress(stage, done, total)`` before each stage and at the end.

    Returns
    -------
    Report, with its ``findings`` and one-line ``verdict``.
    """
    if not callable(field):
        raise TypeError(f"field must be callable as field(x, t), got {type(field).__name__}")
    if not isinstance(marginal, MarginalPath):
        raise TypeError(f"marginal must be a MarginalPath, got {type(marginal).__name__}")
    for key, val, low in (
        ("n", n, 2),
        ("n_samples", n_samples, 2),
        ("n_kl", n_kl, 0),
        ("energy_repeats", energy_repeats, 2),
    ):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < low:
            raise ValueError(f"{key} must be an int >= {low}, got {val!r}")
    if not (isinstance(z_threshold, (int, float)) and z_threshold > 0):
        raise ValueError(f"z_threshold must be a float > 0, got {z_threshold!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable(stage, done, total), got {progress!r}")
    do_figures = bool(figures) and out is not None
    if do_figures:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError(
                'report figures need matplotlib: pip install "fmref[plot]" (or figures=False)'
            ) from None
    label = name or getattr(field, "__name__", None) or type(field).__name__
    data = marginal.data
    seeds = rng_from(rng).spawn(8)
    total = len(_STAGES)

    def stage(i: int) -> None:
        if progress is not None:
            progress(_STAGES[i], i, total)

    stage(0)
    crn = seeds[0].integers(2**63)
    fm = fm_loss(field, marginal, n=n, rng=crn, t_max=t_max, like=like)
    cfm = cfm_loss(field, marginal, n=n, rng=crn, t_max=t_max, like=like)
    floor = cfm_floor(marginal, n=n, rng=crn, t_max=t_max)
    # Where L* is infinite the per-draw gap has infinite variance: no test, report NaN.
    gap, gap_se = (
        _mean_se(cfm.samples - fm.samples - floor.samples) if floor.finite else (math.nan, math.nan)
    )

    stage(1)
    c, c_se = _scale_fit(field, marginal, n, seeds[1], like)

    stage(2)
    ode: dict[str, Any] = {"method": method, "steps": steps}
    gen = sample(field, int(n_samples), rng=seeds[2], marginal=marginal, like=like, **ode)
    x_gen = np.asarray(to_numpy(gen.x), dtype=np.float64)
    z_ref = data.sample(int(n_samples), rng=seeds[3])

    stage(3)
    log_p = compare_log_prob(data.log_prob, x_gen, z_ref)

    stage(4)
    kl = kl_se = None
    kl_method = None
    if n_kl:
        z_kl = data.sample(int(n_kl), rng=seeds[4])
        exact_div = divergence is not None or _has_divergence(field)
        kl_method = "exact divergence" if exact_div else "hutchinson"
        lik = log_likelihood(
            field,
            _convert(z_kl, like),
            divergence=divergence if exact_div else Hutchinson(rng=seeds[5]),
            log_p0=lambda x: marginal.log_prob(x, 0.0),
            **ode,
        )
        lp_model = np.asarray(to_numpy(lik.log_prob), dtype=np.float64)
        kl, kl_se = _mean_se(np.asarray(data.log_prob(z_kl)) - lp_model)

    stage(5)
    # Expected shares from a larger exact sample: overlapping components make P(argmax = k)
    # differ from π_k, and exact samples must not be reported as drifting.
    n_ref = max(25 * int(n_samples), 200_000)
    cov = coverage(data, x_gen)
    expected = coverage(data, data.sample(n_ref, rng=seeds[6])).shares
    # Two-sample binomial standard error of share − expected (the model's own spread plus the
    # reference's), so a dropped mode's share 0 has the reference's error, not zero.
    se = np.sqrt(cov.shares * (1 - cov.shares) / n_samples + expected * (1 - expected) / n_ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        zs = np.where(se > 0, (cov.shares - expected) / np.where(se > 0, se, 1.0), 0.0)

    stage(6)
    energy = energy_distance(x_gen, z_ref)
    null = energy_null(
        lambda m, g: data.sample(m, rng=g),
        int(n_samples),
        int(n_samples),
        rng=seeds[7],
        repeats=int(energy_repeats),
    )
    e_mu, e_sd = float(null.mean()), float(null.std(ddof=1))

    measured = Report(
        label, repr(marginal), marginal.dim, fm, cfm, floor, gap, gap_se, c, c_se, log_p, kl, kl_se,
        kl_method, cov.shares, expected, se, zs, energy, e_mu, e_sd, int(n_samples), int(n_kl),
        (), "",
    )  # fmt: skip
    findings = tuple(_findings(measured, float(z_threshold), float(kl_tolerance)))
    rep = replace(measured, findings=findings, verdict=_verdict(measured, findings))

    stage(7)
    if out is not None:
        rep = _write(rep, marginal, field, x_gen, z_ref, Path(out), do_figures, like)
    if progress is not None:
        progress("done", total, total)
    return rep


def _findings(r: Report, zt: float, kl_tol: float) -> list[Finding]:
    """Every discrepancy of ``r`` beyond ``zt`` standard errors, as sentences with numbers."""
    out: list[Finding] = []
    c, c_se, fm = r.scale, r.scale_stderr, r.fm
    if c < 0:
        out.append(
            Finding(
                "sign",
                f"velocity points the wrong way: best fit u^θ ≈ {c:.3f} u (± {c_se:.2g}); a "
                "data-at-0 or diffusers/SD3 convention (their target ε − z is −u)? see "
                "fmref.adapters.time_reversed / from_diffusers_model",
            )
        )
    elif abs(c - 1) > zt * c_se and abs(c - 1) > 0.01:
        out.append(
            Finding(
                "scale",
                f"velocity is scaled: best fit u^θ ≈ {c:.3f} u (± {c_se:.2g}), expected 1",
            )
        )
    rel, rel_se = fm.relative or 0.0, fm.relative_stderr or 0.0
    if rel > zt * rel_se and rel > FM_ROUNDING:
        worst = int(np.nanargmax(fm.profile))
        share = float(fm.profile[worst] / np.nansum(fm.profile))
        a, b = fm.t_edges[worst], fm.t_edges[worst + 1]
        out.append(
            Finding(
                "fm_loss",
                f"velocity error: relative FM loss {rel:.4g} ± {rel_se:.2g}, largest at "
                f"t ∈ [{a:.2f}, {b:.2f}) ({share:.0%} of L_FM)",
            )
        )
    gap, gap_se = r.identity, r.identity_stderr
    if math.isfinite(gap_se) and abs(gap) > zt * gap_se and gap_se > 0:
        out.append(
            Finding(
                "identity",
                f"E L_CFM − L_FM − L* = {gap:.4g} ± {gap_se:.2g}, but it is 0 for every fixed "
                "field of (x, t): the field's outputs change between calls (hidden state, "
                "training-mode layers?)",
            )
        )
    zs, shares, se, expected = r.shares_z, r.shares, r.shares_stderr, r.expected_shares
    bad = [k for k in np.argsort(-np.abs(zs)) if abs(zs[k]) > zt]
    if bad:
        parts = [
            f"component {k} at {shares[k]:.3f} ± {se[k]:.3f}, expected {expected[k]:.3f}"
            for k in bad[:4]
        ]
        more = f" (+{len(bad) - 4} more)" if len(bad) > 4 else ""
        out.append(Finding("mode_weights", "mode weights drift: " + "; ".join(parts) + more))
    log_p = r.log_p
    if abs(log_p.z) > zt:
        what = (
            "less likely (mass off the modes)" if log_p.z < 0 else "more likely (too concentrated)"
        )
        out.append(
            Finding(
                "log_p_data",
                f"samples are {what} under p_data than data: mean log p_data {log_p.mean:.4f} "
                f"± {log_p.stderr:.2g} vs {log_p.reference_mean:.4f} ± "
                f"{log_p.reference_stderr:.2g}",
            )
        )
    kl, kl_se = r.kl, r.kl_stderr
    if kl is not None and kl_se is not None and kl > zt * kl_se and kl > kl_tol:
        out.append(Finding("kl", f"KL(p_data ‖ p_model) = {kl:.4g} ± {kl_se:.2g} nats, expected 0"))
    energy, e_mu, e_sd = r.energy, r.energy_null_mean, r.energy_null_sd
    if e_sd > 0 and energy > e_mu + zt * e_sd:
        out.append(
            Finding(
                "energy",
                f"energy distance to data {energy:.3g}, null {e_mu:.3g} ± {e_sd:.2g} "
                f"({(energy - e_mu) / e_sd:.0f} null sd above)",
            )
        )
    return out


def _verdict(r: Report, findings: tuple[Finding, ...]) -> str:
    """One line: the findings, or what was measured when there are none."""
    if findings:
        return f"{len(findings)} finding(s): " + "; ".join(f.message for f in findings)
    kl_txt = (
        f"KL {r.kl:.2g} ± {r.kl_stderr:.1g} nats ({r.kl_method})"
        if r.kl is not None and r.kl_stderr is not None
        else "KL skipped"
    )
    return (
        f"no discrepancy detected at these sample sizes ({r.n_samples} ODE samples): relative "
        f"FM loss {r.fm.relative:.3g} ± {r.fm.relative_stderr:.1g}, {kl_txt}, largest coverage "
        f"|z| {float(np.max(np.abs(r.shares_z))):.1f}, energy distance {r.energy:.2g} vs null "
        f"{r.energy_null_mean:.2g} ± {r.energy_null_sd:.1g}"
    )


def _write(
    rep: Report,
    mp: MarginalPath,
    field: Field,
    x_gen: np.ndarray,
    z_ref: np.ndarray,
    out: Path,
    figures: bool,
    like: Any,
) -> Report:
    files: list[str] = []
    if figures:
        from . import plotting

        def np_field(x: np.ndarray, t: np.ndarray) -> np.ndarray:
            return np.asarray(to_numpy(field(_convert(x, like), _convert(t, like))))

        paths = [
            plotting.plot_loss_profile(
                rep.fm, rep.floor, out / "report_profile.png", name=rep.name
            ),
            plotting.plot_coverage(
                rep.shares,
                rep.expected_shares,
                rep.shares_stderr,
                out / "report_coverage.png",
                name=rep.name,
            ),
        ]
        if mp.dim == 2:  # the pictures in the plane
            title = f"ODE samples of {rep.name}"
            paths += [
                plotting.plot_samples(mp, z_ref, x_gen, out / "report_samples.png", title=title),
                plotting.plot_vector_fields(mp, np_field, out / "report_fields.png", name=rep.name),
            ]
        files = [str(p) for p in paths]
    rep = replace(rep, files=tuple(files))
    text = json.dumps(rep.to_dict(), indent=2, allow_nan=False)
    atomic_write(out / "report.json", lambda f: f.write(text.encode()))
    md = rep.markdown()
    atomic_write(out / "report.md", lambda f: f.write(md.encode()))
    return rep
