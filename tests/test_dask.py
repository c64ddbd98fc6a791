"""dask.array inputs: lazy graphs with x's row chunks, equal to NumPy on a two-worker cluster."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask not installed (optional extra 'dask')")
distributed = pytest.importorskip("dask.distributed", reason="dask.distributed not installed")
cloudpickle = pytest.importorskip("cloudpickle")

import dask  # noqa: E402

from fmref.marginals import QUANTITY_INFO, MarginalPath  # noqa: E402
from fmref.mixtures import GaussianMixture  # noqa: E402
from fmref.schedules import Cosine, Linear  # noqa: E402

TOL = {"rtol": 1e-12, "atol": 1e-12}
MANY = (
    "log_prob",
    "score",
    "vector_field",
    "divergence",
    "jacobian",
    "responsibilities",
    "dlog_prob_dt",
    "posterior_cov_trace",
)


def _full(k: int = 5, d: int = 3, seed: int = 0) -> GaussianMixture:
    g = np.random.default_rng(seed)
    a = g.standard_normal((k, d, d))
    covs = a @ np.swapaxes(a, 1, 2) / d + 0.2 * np.eye(d)
    return GaussianMixture(g.dirichlet(np.ones(k)), 2 * g.standard_normal((k, d)), covs)


@pytest.fixture(scope="module")
def client():  # type: ignore[no-untyped-def]
    """A real two-worker dask.distributed cluster (separate processes) on this machine."""
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as c:
        yield c


@pytest.mark.slow
@pytest.mark.parametrize("schedule", [Linear(), Cosine()], ids=["linear", "cosine"])
def test_cluster_equals_numpy_per_row_times(client, schedule) -> None:  # type: ignore[no-untyped-def]
    g = np.random.default_rng(1)
    mp = MarginalPath(_full(), schedule, memory_budget=2**16)
    n = 1000
    x = 2 * g.standard_normal((n, 3))
    t = g.uniform(0.0, 1.0, n)
    xd = da.from_array(x, chunks=(130, 3))
    td = da.from_array(t, chunks=(400,))  # misaligned on purpose: rechunked to x's rows
    lazy = mp.evaluate(xd, td, MANY)
    ref = mp.evaluate(x, t, MANY)
    got = client.compute(lazy).result()
    assert len(client.scheduler_info()["workers"]) == 2
    for q in MANY:
        assert lazy[q].chunks[0] == xd.chunks[0], q
        assert isinstance(got[q], np.ndarray)
        assert got[q].shape == ref[q].shape
        np.testing.assert_allclose(got[q], ref[q], err_msg=q, **TOL)


@pytest.mark.slow
def test_cluster_scalar_time_and_methods(client) -> None:  # type: ignore[no-untyped-def]
    g = np.random.default_rng(2)
    data = GaussianMixture.empirical(g.standard_normal((40, 2)))  # memorizing field
    mp = MarginalPath(data, Linear())
    x = g.standard_normal((500, 2))
    xd = da.from_array(x, chunks=(100, 2))
    for name in ("vector_field", "score", "log_prob", "posterior_mean"):
        got = getattr(mp, name)(xd, 0.7).compute()
        np.testing.assert_allclose(got, getattr(mp, name)(x, 0.7), err_msg=name, **TOL)
    # t as a NumPy array aligned with x, x as NumPy with t lazy
    t = g.uniform(0.0, 0.9, 500)
    np.testing.assert_allclose(mp.divergence(xd, t).compute(), mp.divergence(x, t), **TOL)
    np.testing.assert_allclose(
        mp.score(x, da.from_array(t, chunks=125)).compute(), mp.score(x, t), **TOL
    )


def test_graph_is_lazy() -> None:
    calls: list[int] = []

    def block(i: int) -> np.ndarray:
        calls.append(i)
        return np.random.default_rng(i).standard_normal((50, 3))

    parts = [da.from_delayed(dask.delayed(block)(i), shape=(50, 3), dtype=float) for i in range(4)]
    xd = da.concatenate(parts, axis=0)
    mp = MarginalPath(_full(), Linear())
    out = mp.evaluate(xd, 0.5, ("vector_field", "log_prob"))
    assert calls == []
    assert isinstance(out["vector_field"], da.Array)
    assert out["vector_field"].chunks == ((50, 50, 50, 50), (3,))
    assert out["log_prob"].chunks == ((50, 50, 50, 50),)
    u, lp = dask.compute(out["vector_field"], out["log_prob"], scheduler="sync")
    assert sorted(calls) == [0, 1, 2, 3]  # each block generated once for both quantities
    x = np.concatenate([block(i) for i in range(4)])
    np.testing.assert_allclose(u, mp.vector_field(x, 0.5), **TOL)
    np.testing.assert_allclose(lp, mp.log_prob(x, 0.5), **TOL)


def test_mixture_enters_graph_once() -> None:
    """The parameters are one graph node, not a copy per task (pickled size does not scale)."""
    mp = MarginalPath(_full(k=200, d=8), Linear())
    x = np.random.default_rng(3).standard_normal((2000, 8))
    blocks = 40
    lazy = mp.vector_field(da.from_array(x, chunks=(2000 // blocks, 8)), 0.5)
    graph = dict(lazy.__dask_graph__())
    size_mp = len(cloudpickle.dumps(mp))
    size_graph = len(cloudpickle.dumps(graph))
    assert size_mp > 100_000  # large enough that per-task copies would show
    assert size_graph < size_mp + x.nbytes + 200_000, (size_graph, size_mp)


def test_every_quantity_has_its_records_shape_lazily_and_computed() -> None:
    # k = 5, d = 3: the records' axes map to distinct sizes. A lazy shape that disagreed with
    # the computed block would fail here (dask trusts the declared shape until compute).
    mp = MarginalPath(_full(k=5, d=3), Cosine())
    x = np.random.default_rng(6).standard_normal((120, 3))
    # The classifier quantities need labels (y=), which the Dask path refuses.
    info = {n: q for n, q in QUANTITY_INFO.items() if not q.given_y}
    names = tuple(info)
    lazy = mp.evaluate(da.from_array(x, chunks=(40, 3)), 0.3, names)
    eager = mp.evaluate(x, 0.3, names)
    for name, q in info.items():
        assert lazy[name].shape == q.dims(120, 3, 5), name
        got = lazy[name].compute(scheduler="sync")
        assert got.shape == q.dims(120, 3, 5), name
        np.testing.assert_allclose(got, eager[name], err_msg=name, **TOL)


def test_column_chunks_and_float32() -> None:
    g = np.random.default_rng(4)
    mp = MarginalPath(_full(d=4), Linear())
    x = g.standard_normal((300, 4)).astype(np.float32)
    xd = da.from_array(x, chunks=(100, 2))  # split columns: joined per row block
    u = mp.vector_field(xd, 0.25)
    assert u.dtype == np.float32
    assert u.chunks == ((100, 100, 100), (4,))
    got = u.compute(scheduler="sync")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, mp.vector_field(x, 0.25))


def test_bad_inputs() -> None:
    mp = MarginalPath(_full(d=3), Linear())
    x = da.zeros((100, 3), chunks=(50, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(n, 3\)"):
        mp.score(da.zeros((10, 4), chunks=5), 0.5)
    with pytest.raises(ValueError, match="x must have 2 dimensions"):
        mp.score(da.zeros((10,), chunks=5), 0.5)
    with pytest.raises(TypeError, match="real floating"):
        mp.score(da.zeros((10, 3), dtype=int, chunks=5), 0.5)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(100,\)"):
        mp.score(x, da.zeros(99, chunks=50))
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        mp.score(x[x[:, 0] > 0], 0.5)
    with pytest.raises(TypeError, match="bool"):
        mp.score(x, True)
    # Value checks need the data: they surface, naming the argument, when computed.
    nan_x = da.from_array(np.full((4, 3), np.nan), chunks=2)
    with pytest.raises(ValueError, match="x must be finite"):
        mp.score(nan_x, 0.5).compute(scheduler="sync")
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        mp.score(x, da.full(100, 1.5, chunks=50)).compute(scheduler="sync")
    with pytest.raises(TypeError, match="dtype"):
        mp.score(x.astype(np.float32), da.full(100, 0.5, chunks=50)).compute(scheduler="sync")
