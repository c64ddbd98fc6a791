"""Golden vectors: determinism, manifest, safe loading (tampering), verify, and the CLI."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from fmref import GaussianMixture, MarginalPath
from fmref.cli import main
from fmref.schedules import SCHEDULES
from fmref.testing import SCHEMA_VERSION, load_suite, verify_suite, write_suite
from fmref.testing import vectors as vmod
from fmref.testing._npzio import sha256


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vec") / "suite"
    write_suite(out, seed=3)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _fmref_impl(quantity: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
    """A reference impl by fmref itself (verifies the plumbing, not the formulas)."""
    if quantity == "target":
        return None
    mp = MarginalPath(
        GaussianMixture(case["weights"], case["means"], case["covs"]),
        SCHEDULES[case["schedule"]](**case["schedule_params"]),
    )
    return mp.evaluate(inputs["x"], inputs["t"], (quantity,))[quantity]


def test_same_seed_gives_byte_identical_files(tmp_path: Path, suite_dir: Path) -> None:
    write_suite(tmp_path / "again", seed=3)
    a, b = _files(suite_dir), _files(tmp_path / "again")
    assert a.keys() == b.keys() and len(a) == 24 + 3 + 1  # cases, labelled cases, manifest
    assert all(a[k] == b[k] for k in a)
    write_suite(tmp_path / "other", seed=4)
    c = _files(tmp_path / "other")
    assert a["cases/linear-full.npz"] != c["cases/linear-full.npz"]


def test_npz_members_have_fixed_timestamps(suite_dir: Path) -> None:
    with zipfile.ZipFile(suite_dir / "cases" / "cosine-full.npz") as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_manifest_records_versions_hashes_and_parameters(suite_dir: Path) -> None:
    m = json.loads((suite_dir / "manifest.json").read_text())
    assert m["schema_version"] == SCHEMA_VERSION and m["seed"] == 3 and m["dtype"] == "float64"
    assert m["fmref_version"] == __import__("fmref").__version__
    assert m["tolerances"]["float64"] == {"rtol": 1e-7, "atol": 1e-9}
    kinds = {c["data"]["kind"] for c in m["cases"]}
    scheds = {c["schedule"] for c in m["cases"]}
    assert kinds == {"isotropic", "diagonal", "full", "dirac"} and len(scheds) == 6
    for c in m["cases"]:
        assert sha256((suite_dir / c["file"]).read_bytes()) == c["sha256"]
        assert (1.0 in c["times"]) == (c["data"]["kind"] != "dirac")
        assert 0.0 in c["times"]


@pytest.mark.slow
def test_expected_values_match_an_independent_density_and_identities(suite_dir: Path) -> None:
    suite = load_suite(suite_dir)
    for case in suite.cases:
        p, inp, exp = case.params, case.inputs, case.expected
        a, b = inp["alpha"][:, None], inp["beta"][:, None]
        sample = inp["tail"] == 0
        xs = (a * inp["z"] + b * inp["eps"])[sample]
        np.testing.assert_allclose(inp["x"][sample], xs, rtol=1e-14, atol=1e-14)
        # Tail rows: at least 10 standard deviations of S_k = α²Σ_k + β²I from every mode.
        full = GaussianMixture(p["weights"], p["means"], p["covs"]).full_covs()
        for i in np.flatnonzero(~sample):
            for mu, c in zip(p["means"], full, strict=True):
                big_s = a[i, 0] ** 2 * c + b[i, 0] ** 2 * np.eye(c.shape[0])
                dist = np.linalg.norm(inp["x"][i] - a[i, 0] * mu)
                assert dist >= 10 * np.sqrt(np.linalg.eigvalsh(big_s).max()) * (1 - 1e-12)
        assert (
            sorted(set(inp["t"]))
            == [0, 1e-3, 1e-2, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999, 1][
                : 10 if p["kind"] == "dirac" else 11
            ]
        )
        finite = np.isfinite(inp["beta_dot"])
        tgt = inp["alpha_dot"][:, None] * inp["z"] + inp["beta_dot"][:, None] * inp["eps"]
        np.testing.assert_allclose(exp["target"][finite], tgt[finite], rtol=1e-14, atol=1e-14)
        assert np.all(np.isnan(exp["target"][~finite]))
        # log p_t by scipy's dense densities with S_k = α² Σ_k + β² I (no eigenbasis).
        covs = GaussianMixture(p["weights"], p["means"], p["covs"]).full_covs()
        d = covs.shape[1]
        logs = []
        for i in range(inp["t"].shape[0]):
            ai, bi = inp["alpha"][i], inp["beta"][i]
            comps = [
                np.log(w)
                + multivariate_normal(ai * mu, ai**2 * c + bi**2 * np.eye(d)).logpdf(inp["x"][i])
                for w, mu, c in zip(p["weights"], p["means"], covs, strict=True)
            ]
            logs.append(logsumexp(comps))
        np.testing.assert_allclose(exp["log_prob"], logs, rtol=1e-10, atol=1e-10)
        # Score and velocity by dense Gaussian conditioning (rows with a finite β̇).
        for i in np.flatnonzero(finite):
            s_ref, u_ref = _dense_score_and_field(
                p["weights"],
                p["means"],
                covs,
                inp["x"][i],
                inp["alpha"][i],
                inp["beta"][i],
                inp["alpha_dot"][i],
                inp["beta_dot"][i],
            )
            np.testing.assert_allclose(exp["score"][i], s_ref, rtol=1e-8, atol=1e-8)
            np.testing.assert_allclose(exp["vector_field"][i], u_ref, rtol=1e-8, atol=1e-8)
        # An identity of fmref's closed forms (zero for any per-component coefficients): not
        # evidence, but it ties the stored rows of ∂_t log p, div u, u and s to one another.
        res = (
            exp["dlog_prob_dt"] + exp["divergence"] + np.sum(exp["vector_field"] * exp["score"], 1)
        )
        scale = np.abs(exp["dlog_prob_dt"]) + np.abs(exp["divergence"]) + 1.0
        np.testing.assert_allclose(res / scale, 0.0, rtol=0, atol=1e-10)


def _dense_score_and_field(
    weights: Any, means: Any, covs: Any, x: Any, a: float, b: float, ad: float, bd: float
) -> tuple[np.ndarray, np.ndarray]:
    """∇log p_t(x) and u_t(x) = α̇ E[z|x] + β̇ E[ε|x] for one point, by dense conditioning.

    Per component: S_k = α²Σ_k + β²I, r_k = x − αμ_k, s_k = −S_k⁻¹r_k, E[z|x,k] = μ_k +
    αΣ_k S_k⁻¹r_k, E[ε|x,k] = β S_k⁻¹r_k, mixed by P(k|x) from scipy's densities.
    """
    d = x.shape[0]
    logw, s_k, u_k = [], [], []
    for w, mu, c in zip(weights, means, covs, strict=True):
        big_s = a * a * c + b * b * np.eye(d)
        sol = np.linalg.solve(big_s, x - a * mu)
        logw.append(np.log(w) + multivariate_normal(a * mu, big_s).logpdf(x))
        s_k.append(-sol)
        u_k.append(ad * (mu + a * c @ sol) + bd * b * sol)
    gam = np.exp(np.array(logw) - logsumexp(logw))
    return gam @ np.array(s_k), gam @ np.array(u_k)


def test_verify_passes_fmref_and_reports_skips(suite_dir: Path) -> None:
    rep = verify_suite(suite_dir, _fmref_impl)
    assert rep.passed
    assert rep.count("pass") == 24 * 6 and rep.count("skip") == 24
    assert "PASSED" in rep.table() and "SKIP" in rep.table()


def test_verify_fails_a_wrong_quantity_and_names_the_row(suite_dir: Path) -> None:
    def wrong(q: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
        out = _fmref_impl(q, case, inputs)
        return None if out is None else (out * (1 + 1e-5) if q == "divergence" else out)

    rep = verify_suite(suite_dir, wrong, quantities=["divergence", "score"])
    assert not rep.passed
    fails = [r for r in rep.rows if r.status == "fail"]
    assert {r.quantity for r in fails} == {"divergence"}
    assert all(r.ratio is not None and r.ratio > 1 and r.row is not None for r in fails)
    assert "FAIL" in rep.table() and "expected" in rep.table()
    # A looser tolerance accepts the same implementation.
    assert verify_suite(suite_dir, wrong, quantities=["divergence"], rtol=1e-4).passed


def test_precision_is_asked_not_taken_from_the_returned_dtype(suite_dir: Path) -> None:
    torch = pytest.importorskip("torch", reason="torch not installed (optional extra)")

    def f32(q: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
        out = _fmref_impl(q, case, inputs)
        return None if out is None else torch.from_numpy(np.asarray(out, dtype=np.float32))

    # A float32 answer fails a float64 verification, saying why ...
    rep = verify_suite(suite_dir, f32, quantities=["score", "log_prob"])
    assert rep.count("fail") == 48 and not rep.passed
    assert all("returned float32, the check asks for float64" in r.message for r in rep.rows)
    # ... and passes when float32 is what is asked, at the float32 tolerances.
    rep = verify_suite(suite_dir, f32, quantities=["score", "log_prob"], precision="float32")
    assert rep.passed
    assert {(r.rtol, r.atol) for r in rep.rows} == {(1e-4, 1e-5)}

    # Computing in float32 and returning float64 fails the float64 check by its errors.
    def f32_as_f64(q: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
        low = {k: v.astype(np.float32) for k, v in inputs.items()}
        out = _fmref_impl(q, case, low)
        return None if out is None else np.asarray(out, dtype=np.float64)

    rep = verify_suite(suite_dir, f32_as_f64, quantities=["score"])
    assert rep.count("fail") >= 20 and not rep.passed
    with pytest.raises(ValueError, match="precision"):
        verify_suite(suite_dir, f32, precision="float8")


@pytest.mark.slow
def test_verify_reports_errors_and_nothing_implemented(suite_dir: Path) -> None:
    def boom(q: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
        raise RuntimeError("kaput")

    rep = verify_suite(suite_dir, boom, quantities=["score"])
    assert rep.count("error") == 24 and not rep.passed and "kaput" in rep.table()
    rep = verify_suite(suite_dir, lambda q, c, i: None)
    assert rep.count("skip") == 24 * 7 and not rep.passed
    with pytest.raises(ValueError, match="quantities"):
        verify_suite(suite_dir, _fmref_impl, quantities=["nope"])


def test_a_quantity_undefined_at_every_row_is_a_skip_not_a_pass() -> None:
    from fmref.testing._verify import check_case

    inputs = {"t": np.array([1.0, 1.0])}
    expected = {"target": np.full((2, 2), np.nan)}  # β̇ infinite at every row
    rows = check_case(
        "c", {}, inputs, expected, lambda q, c, i: np.zeros((2, 2)), ("target",), {}, None, None
    )
    assert [(r.status, r.message) for r in rows] == [("skip", "undefined at every row")]


def _copy(src: Path, dst: Path) -> Path:
    for rel, data in _files(src).items():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_bytes(data)
    return dst


def test_load_refuses_a_modified_file(tmp_path: Path, suite_dir: Path) -> None:
    root = _copy(suite_dir, tmp_path / "s")
    f = root / "cases" / "vp-full.npz"
    data = bytearray(f.read_bytes())
    data[-200] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"sha256 .* does not match"):
        load_suite(root)
    f.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_suite(root)


def test_load_refuses_wrong_schema_and_paths(tmp_path: Path, suite_dir: Path) -> None:
    root = _copy(suite_dir, tmp_path / "s")
    m = json.loads((root / "manifest.json").read_text())
    for change, pattern in (
        ({"schema_version": 99}, "schema_version 99 is not supported"),
        ({"schema": "other"}, "wrong 'schema'"),
    ):
        (root / "manifest.json").write_text(json.dumps({**m, **change}))
        with pytest.raises(ValueError, match=pattern):
            load_suite(root)
    bad = json.loads(json.dumps(m))
    bad["cases"][0]["file"] = "cases/../../etc/passwd"
    (root / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="bad file entry"):
        load_suite(root)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_suite(root)


def test_load_never_unpickles_even_with_a_matching_hash(tmp_path: Path, suite_dir: Path) -> None:
    root = _copy(suite_dir, tmp_path / "s")
    buf = io.BytesIO()
    arrays = dict(np.load(root / "cases" / "linear-isotropic.npz"))
    arrays["x"] = np.array([{"evil": 1}], dtype=object)
    np.savez(buf, **arrays)  # pickles the object array
    (root / "cases" / "linear-isotropic.npz").write_bytes(buf.getvalue())
    m = json.loads((root / "manifest.json").read_text())
    m["cases"][0]["sha256"] = sha256(buf.getvalue())
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"dtype object.*no pickles"):
        load_suite(root)


@pytest.mark.slow
def test_write_is_atomic_and_refuses_to_clobber(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "s"
    calls = {"n": 0}
    real = vmod.case_arrays

    def flaky(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk on fire")
        return real(*a, **k)

    monkeypatch.setattr(vmod, "case_arrays", flaky)
    with pytest.raises(RuntimeError):
        write_suite(out)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(vmod, "case_arrays", real)
    write_suite(out)
    with pytest.raises(ValueError, match="already exists"):
        write_suite(out)
    write_suite(out, seed=1, overwrite=True)
    assert load_suite(out).manifest["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="not a vector suite"):
        write_suite(tmp_path / "mine", overwrite=True)
    for bad in ({"seed": -1}, {"per_time": 0}):
        with pytest.raises(ValueError):
            write_suite(tmp_path / "x", **bad)


IMPL = """
from fmref import GaussianMixture, MarginalPath
from fmref.schedules import SCHEDULES

def impl(quantity, case, inputs):
    if quantity not in ("score", "vector_field"):
        return None
    mp = MarginalPath(GaussianMixture(case["weights"], case["means"], case["covs"]),
                      SCHEDULES[case["schedule"]](**case["schedule_params"]))
    out = mp.evaluate(inputs["x"], inputs["t"], (quantity,))[quantity]
    return out * SCALE

SCALE = 1.0
"""


@pytest.mark.slow
def test_cli_vectors_and_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "suite"
    assert main(["vectors", "--out", str(out), "--seed", "2", "--per-time", "2"]) == 0
    assert "wrote 24 cases" in capsys.readouterr().out
    assert main(["vectors", "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "good.py").write_text(IMPL)
    (tmp_path / "bad.py").write_text(IMPL.replace("SCALE = 1.0", "SCALE = 1.001"))
    assert main(["verify", str(out), "--impl", f"{tmp_path / 'good.py'}:impl"]) == 0
    text = capsys.readouterr().out
    assert "PASSED: 48 pass, 0 fail, 0 error, 120 skip" in text
    assert main(["verify", str(out), "--impl", f"{tmp_path / 'good.py'}:impl", "--strict"]) == 1
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    assert main(["verify", str(out), "--impl", "bad:impl", "--quantity", "score"]) == 1
    text = capsys.readouterr().out
    assert "FAILED: 0 pass, 24 fail" in text
    assert main(["verify", str(out), "--impl", "bad:nothing"]) == 1
    assert "no callable" in capsys.readouterr().err
    assert main(["verify", str(out), "--impl", "no_such_module_xyz:impl"]) == 1
    assert "cannot import" in capsys.readouterr().err
    (out / "cases" / "linear-full.npz").write_bytes(b"garbage")
    assert main(["verify", str(out), "--impl", "good:impl"]) == 2  # 2: the suite is unusable
    assert "does not match the manifest" in capsys.readouterr().err


# -- fmref 0.1 suites and implementations (quantity "x_hat", schema version 1) -------------
V1 = Path(__file__).parent / "data" / "golden_v1"  # a whole suite written by fmref 0.1.0 (24 cases)


def test_new_suites_are_schema_2_and_name_the_posterior_mean(suite_dir: Path) -> None:
    m = json.loads((suite_dir / "manifest.json").read_text())
    assert SCHEMA_VERSION == 2 and m["schema_version"] == 2
    assert m["outputs"]["posterior_mean"] == {
        "description": "posterior mean E[z | X_t = x] (data prediction x̂)",
        "shape": "(n, d)",
    }
    assert "x_hat" not in m["outputs"]
    assert all("posterior_mean" in c.expected for c in load_suite(suite_dir).cases)


def test_a_01_suite_loads_with_x_hat_renamed_and_verifies() -> None:
    m = json.loads((V1 / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["fmref_version"] == "0.1.0" and "x_hat" in m["outputs"]
    suite = load_suite(V1)
    assert len(suite.cases) == 24
    for case in suite.cases:
        assert "x_hat" not in case.expected
        # The renamed array is E[z | x] by today's fmref, not some other output.
        got = _fmref_impl("posterior_mean", case.params, case.inputs)
        np.testing.assert_allclose(got, case.expected["posterior_mean"], rtol=1e-12, atol=1e-12)
    rep = verify_suite(V1, _fmref_impl)
    assert rep.passed and rep.count("fail") == rep.count("error") == 0
    assert rep.count("pass") + rep.count("skip") == 24 * 7 and rep.count("pass") >= 24 * 6


def test_an_01_implementation_answering_x_hat_is_still_checked() -> None:
    def old(q: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
        if q == "posterior_mean":
            return None  # 0.1's protocol knew this quantity as "x_hat" only
        return _fmref_impl("posterior_mean" if q == "x_hat" else q, case, inputs)

    with pytest.warns(DeprecationWarning, match="'x_hat'"):
        rep = verify_suite(V1, old, quantities=["posterior_mean"])
    assert rep.passed and rep.count("pass") == 24

    def old_wrong(q: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
        out = old(q, case, inputs)
        return None if out is None else 1.01 * out

    with pytest.warns(DeprecationWarning):
        rep = verify_suite(V1, old_wrong, quantities=["posterior_mean"])
    assert rep.count("fail") == 24 and not rep.passed


def test_verify_accepts_x_hat_as_a_deprecated_quantity_name(suite_dir: Path) -> None:
    with pytest.warns(DeprecationWarning, match="'x_hat' → 'posterior_mean'"):
        rep = verify_suite(suite_dir, _fmref_impl, quantities=["x_hat"])
    assert {r.quantity for r in rep.rows} == {"posterior_mean"} and rep.passed


def test_manifest_tolerances_may_tighten_never_loosen(tmp_path: Path, suite_dir: Path) -> None:
    root = _copy(suite_dir, tmp_path / "s")
    m = json.loads((root / "manifest.json").read_text())
    m["tolerances"]["float64"] = {"rtol": 1e-9, "atol": 1e-12}
    (root / "manifest.json").write_text(json.dumps(m))
    rep = verify_suite(root, _fmref_impl, quantities=["score"])
    assert rep.passed and {(r.rtol, r.atol) for r in rep.rows} == {(1e-9, 1e-12)}
    m["tolerances"]["float64"] = {"rtol": 2e-7, "atol": 1e-9}  # twice the schema's rtol
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"'rtol'\] = 2e-07 is looser than the schema's 1e-07"):
        load_suite(root)


def test_an_in_memory_suite_missing_cases_is_refused(suite_dir: Path) -> None:
    suite = load_suite(suite_dir)
    partial = vmod.Suite(suite.root, suite.manifest, suite.cases[:1])
    with pytest.raises(ValueError, match="of the schema are missing"):
        verify_suite(partial, _fmref_impl)


# -- schema 2: labelled cases, condition estimates, reach ---------------------------------
def _labelled_impl(q: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
    """fmref itself on the labelled protocol (plumbing, not formulas)."""
    from fmref.guidance import CFG

    if "labels" not in case:
        return None
    data = GaussianMixture(case["weights"], case["means"], case["covs"], labels=case["labels"])
    mp = MarginalPath(data, SCHEDULES[case["schedule"]](**case["schedule_params"]))
    x, t, y = inputs["x"], inputs["t"], inputs["y"]
    if q == "cfg_vector_field":
        return CFG(mp, y, case["w"]).vector_field(x, t)
    name = q.removesuffix("_given_y")
    return mp.evaluate(x, t, (name,), y=y)[name]


def test_labelled_cases_match_dense_conditioning(suite_dir: Path) -> None:
    suite = load_suite(suite_dir)
    assert [c.id for c in suite.labelled] == ["labelled-linear", "labelled-cosine", "labelled-vp"]
    for case in suite.labelled:
        p, inp, exp = case.params, case.inputs, case.expected
        assert inp["y"].dtype == np.int64 and set(inp["y"].tolist()) == {0, 1}
        covs = GaussianMixture(p["weights"], p["means"], p["covs"]).full_covs()
        sched = SCHEDULES[p["schedule"]](**p["schedule_params"])
        for i in range(0, inp["t"].shape[0], 5):
            sv = sched(np.array([inp["t"][i]]))
            a, b, ad, bd = (
                float(getattr(sv, k)[0]) for k in ("alpha", "beta", "alpha_dot", "beta_dot")
            )
            if not np.isfinite(bd):
                continue
            x, y = inp["x"][i], inp["y"][i]
            mine = p["labels"] == y
            w_y = p["weights"][mine] / p["weights"][mine].sum()
            _, u = _dense_score_and_field(p["weights"], p["means"], covs, x, a, b, ad, bd)
            s_y, u_y = _dense_score_and_field(w_y, p["means"][mine], covs[mine], x, a, b, ad, bd)
            np.testing.assert_allclose(exp["score_given_y"][i], s_y, rtol=1e-8, atol=1e-8)
            np.testing.assert_allclose(exp["vector_field_given_y"][i], u_y, rtol=1e-8, atol=1e-8)
            cfg = (1 - p["w"]) * u + p["w"] * u_y
            np.testing.assert_allclose(exp["cfg_vector_field"][i], cfg, rtol=1e-8, atol=1e-8)
            logs = [
                np.log(wk) + multivariate_normal(a * mu, a * a * c + b * b * np.eye(2)).logpdf(x)
                for wk, mu, c in zip(p["weights"], p["means"], covs, strict=True)
            ]
            gam = np.exp(np.array(logs) - logsumexp(logs))
            np.testing.assert_allclose(
                exp["classifier_log_prob"][i], np.log(gam[mine].sum()), rtol=1e-8, atol=1e-8
            )


def test_labelled_cases_verify_when_asked_and_catch_a_guidance_convention(
    suite_dir: Path,
) -> None:
    rep = verify_suite(suite_dir, _labelled_impl, labelled=True)
    assert rep.count("pass") == 3 * 6 and rep.count("fail") == rep.count("error") == 0
    # By default only the unlabelled cases are asked (protocol of schema 1 implementations).
    assert {r.case for r in verify_suite(suite_dir, _fmref_impl).rows} == {
        c.id for c in load_suite(suite_dir).cases
    }

    def ho(q: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
        return _labelled_impl(q, {**case, "w": case["w"] + 1.0}, inputs)  # w = 1 + ω slip

    rep = verify_suite(suite_dir, ho, quantities=["cfg_vector_field"])
    assert rep.count("fail") == 3 and not rep.passed
    with pytest.raises(ValueError, match="no labelled cases"):
        verify_suite(V1, _labelled_impl, labelled=True)


def _rewrite_manifest(root: Path, edit: Any) -> None:
    m = json.loads((root / "manifest.json").read_text())
    edit(m)
    (root / "manifest.json").write_text(json.dumps(m))


def test_the_manifest_checks_cover_the_labelled_section(tmp_path: Path, suite_dir: Path) -> None:
    edits = {
        "a missing labelled case": (
            lambda m: m["labelled_cases"].pop(),
            r"\['labelled-vp'\] of the schema are missing",
        ),
        "no labelled section": (lambda m: m.pop("labelled_cases"), "'labelled_cases' missing"),
        "other labels": (
            lambda m: m["labelled_cases"][0]["data"].__setitem__("labels", [0, 0, 1, 1]),
            "needs the labels",
        ),
        "no w": (lambda m: m["labelled_cases"][0].pop("w"), "'w' must be a finite number"),
        "labels on a plain case": (
            lambda m: m["cases"][0]["data"].__setitem__("labels", [0, 1, 0]),
            "an unlabelled case has no 'labels'",
        ),
    }
    for what, (edit, match) in edits.items():
        root = _copy(suite_dir, tmp_path / what.replace(" ", "_"))
        _rewrite_manifest(root, edit)
        with pytest.raises(ValueError, match=match):
            load_suite(root)


def test_a_case_file_without_its_condition_estimates_is_refused(
    tmp_path: Path, suite_dir: Path
) -> None:
    from fmref.testing._npzio import npz_bytes

    for cid, drop, match in (
        ("linear-full", "score_cond", r"lacks arrays \['score_cond'\]"),
        ("labelled-cosine", "classifier_score_cond", "lacks arrays"),
        ("linear-full", "tail", r"lacks arrays \['tail'\]"),
    ):
        root = _copy(suite_dir, tmp_path / f"{cid}-{drop}")
        with np.load(root / "cases" / f"{cid}.npz") as z:
            arrays = {k: z[k] for k in z.files if k != drop}
        blob = npz_bytes(arrays)
        (root / "cases" / f"{cid}.npz").write_bytes(blob)

        def rehash(m: dict[str, Any], cid: str = cid, blob: bytes = blob) -> None:
            for c in (*m["cases"], *m["labelled_cases"]):
                if c["id"] == cid:
                    c["sha256"] = sha256(blob)

        _rewrite_manifest(root, rehash)
        with pytest.raises(ValueError, match=match):
            load_suite(root)


def test_failing_rows_carry_x_the_vectors_and_counts_by_time(suite_dir: Path) -> None:
    def late(q: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
        out = _fmref_impl(q, case, inputs)
        bad = (inputs["t"] > 0.98) & (inputs["t"] < 1)  # wrong only near the data end
        return None if out is None else np.where(bad[:, None], 1.001 * out, out)

    rep = verify_suite(suite_dir, late, quantities=["score"])
    fails = [r for r in rep.rows if r.status == "fail"]
    assert len(fails) == 24
    for r in fails:
        assert r.x is not None and r.expected is not None and r.actual is not None
        assert (
            len(r.x)
            == len(r.expected)
            == len(r.actual)
            == (3 if "diagonal" in r.case or "full" in r.case else 2)
        )
        assert r.by_time.startswith("t = 0.99: ") and "t = 0.999: " in r.by_time
        assert "x = [" in r.message and "failing rows by time" in r.message
    text = rep.table(failures_only=True)
    assert "PASS " not in text and text.count("FAIL") == 24 + 1  # the rows and the verdict
    doc = json.loads(rep.to_json())
    assert doc["passed"] is False and doc["counts"]["fail"] == 24
    assert doc["rows"][0]["expected"] == list(fails[0].expected)
    junit = rep.to_junit()
    assert junit.count("<testcase ") == 24 and junit.count("<failure ") == 24


@pytest.mark.slow
def test_correct_float32_code_passes_every_suite_and_float64_code_too(suite_dir: Path) -> None:
    """The 0.1 suite's false alarm (linear-dirac score at t = 0.99 in float32) is gone."""
    torch = pytest.importorskip("torch", reason="torch not installed (optional extra)")
    from fmref.testing import torch_reference as tef

    def impl32(q: str, case: dict[str, Any], inputs: dict[str, np.ndarray]) -> Any:
        f32 = {k: torch.from_numpy(v).float() for k, v in inputs.items()}
        p = tef.ExactPath(
            case["schedule"], case["schedule_params"], case["weights"], case["means"], case["covs"]
        )
        p.logw, p.mu, p.cov = p.logw.float(), p.mu.float(), p.cov.float()
        x, t = f32["x"], f32["t"]
        table = {
            "log_prob": lambda: p.log_prob(x, t).detach(),
            "score": lambda: tef._grad(p.log_prob, x, t, "x"),
            "dlog_prob_dt": lambda: tef._grad(p.log_prob, x, t, "t"),
            "vector_field": lambda: p.vector_field(x, t).detach(),
            "divergence": lambda: tef.divergence(p, x, t).detach(),
            "posterior_mean": lambda: p.x_hat(x, t).detach(),
        }
        return table[q]() if q in table else None

    for root in (V1, suite_dir):
        assert verify_suite(root, impl32, precision="float32").passed
        assert verify_suite(root, tef.impl).passed
        assert not verify_suite(root, impl32, quantities=["score"]).passed  # float64 asked
