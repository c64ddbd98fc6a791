"""One CFM training step (forward, loss, backward, Adam): fmref's hand-written MLP vs PyTorch.

Architecture: features [x, t, sin(2π f t), cos(2π f t), f = 1..4], three hidden layers of 256
with SiLU, linear output of width d; batch 1024; d ∈ {2, 64}; float32 and float64. The batch is
one CFM batch of the Linear schedule (x = t z + (1 − t) ε, target z − ε), drawn once: the step's
cost does not depend on the values.

The PyTorch side is the step a user would write: an ``nn.Module`` computing the same features
followed by an ``nn.Sequential`` of ``Linear``/``SiLU`` initialised with fmref's weights,
``torch.optim.Adam`` with default options, ``zero_grad``/``backward``/``step``. Both use the same
thread count (``torch.set_num_threads`` is set to the BLAS threads NumPy uses, reported). Before
timing, the torch step is checked to give fmref's loss and gradients (else RuntimeError).
Times are the median (and the best) of single steps after warm-up, fmref and torch
interleaved so machine noise hits both alike; on a shared machine the best is the steadier
estimate of the intrinsic cost. Set ``OPENBLAS_NUM_THREADS`` (read before NumPy starts) to
choose the thread count for both.

Run: ``python -m benchmarks.bench_train [--quick]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fmref.mlp import MLP
from fmref.optim import Adam
from fmref.paths import GaussianPath
from fmref.schedules import Linear

HIDDEN = (256, 256, 256)
BATCH = 1024
FREQS = 4


def blas_threads() -> int:
    """BLAS threads NumPy uses: threadpoolctl's answer if installed, else the environment."""
    try:
        from threadpoolctl import threadpool_info

        blas = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
        if blas:
            return int(blas[0])
    except ImportError:
        pass
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return os.cpu_count() or 1


def cfm_batch(d: int, dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t, target) of the Linear schedule: x = t z + (1 − t) ε, target = z − ε."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((BATCH, d)) + 2.0
    eps = rng.standard_normal((BATCH, d))
    t = rng.uniform(size=BATCH)
    ps = GaussianPath(Linear()).draw(z, t, eps=eps)
    return ps.x.astype(dtype), t.astype(dtype), ps.target.astype(dtype)


def torch_step(model: MLP, x: np.ndarray, t: np.ndarray, target: np.ndarray) -> Any:
    """Return (step, grads) for the same model in PyTorch, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    nn = torch.nn
    dt = getattr(torch, model.dtype_name)

    class Field(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            omega = 2 * np.pi * np.arange(1, model.time_frequencies + 1)
            self.register_buffer("omega", torch.as_tensor(omega, dtype=dt)[None, :])
            widths = [model.dim + 1 + 2 * model.time_frequencies, *model.hidden, model.dim]
            layers: list[Any] = []
            for i, (a, b) in enumerate(itertools.pairwise(widths)):
                layers.append(nn.Linear(a, b, dtype=dt))
                if i < len(model.hidden):
                    layers.append(nn.SiLU())
            self.net = nn.Sequential(*layers)

        def forward(self, x: Any, t: Any) -> Any:
            tc = t[:, None]
            arg = tc * self.omega
            return self.net(torch.cat([x, tc, torch.sin(arg), torch.cos(arg)], dim=1))

    field = Field()
    state = model.state_dict()
    with torch.no_grad():
        for i, lin in enumerate(m for m in field.net if isinstance(m, nn.Linear)):
            lin.weight.copy_(torch.as_tensor(state[f"W{i + 1}"].T))  # torch stores (out, in)
            lin.bias.copy_(torch.as_tensor(state[f"b{i + 1}"]))
    opt = torch.optim.Adam(field.parameters(), lr=1e-3)
    xt, tt, yt = (torch.as_tensor(a) for a in (x, t, target))

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = ((field(xt, tt) - yt) ** 2).sum(dim=1).mean()
        loss.backward()
        opt.step()
        return float(loss.detach())

    def grads() -> tuple[float, list[np.ndarray]]:
        field.zero_grad(set_to_none=True)
        loss = ((field(xt, tt) - yt) ** 2).sum(dim=1).mean()
        loss.backward()
        out: list[np.ndarray] = []
        for lin in (m for m in field.net if isinstance(m, nn.Linear)):
            w, b = lin.weight.grad, lin.bias.grad
            assert w is not None and b is not None  # backward just filled them
            out += [w.T.numpy().copy(), b.numpy().copy()]
        return float(loss.detach()), out

    return step, grads


def check_same(model: MLP, grads_fn: Callable, x: Any, t: Any, target: Any) -> None:
    """Raise RuntimeError unless torch and fmref agree on the loss and every gradient."""
    rtol = 1e-3 if model.dtype_name == "float32" else 1e-9
    loss, grads = model.loss_and_grad(x, t, target)
    tloss, tgrads = grads_fn()
    ok = np.isclose(loss, tloss, rtol=rtol, atol=0)
    for g, tg in zip(grads, tgrads, strict=True):
        ok &= np.allclose(g, tg, rtol=rtol, atol=rtol * np.abs(tg).max())
    if not ok:
        raise RuntimeError("the torch model does not reproduce fmref's loss and gradients")


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Time one training step for d ∈ {2, 64} × {float32, float64}; one row each."""
    threads = blas_threads()
    torch: Any
    try:
        import torch

        old_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    except ImportError:
        torch = None
    warmup, repeats = (3, 15) if quick else (10, 60)
    rows = []
    try:
        for dtype in ("float32", "float64"):
            for d in (2, 64):
                model = MLP(d, HIDDEN, time_frequencies=FREQS, dtype=dtype, rng=0)
                x, t, target = cfm_batch(d, dtype)
                pair = torch_step(model, x, t, target)
                if pair is not None:
                    check_same(model, pair[1], x, t, target)
                opt = Adam(model.params, lr=1e-3)

                def ours(model: MLP = model, opt: Adam = opt, x=x, t=t, target=target) -> None:
                    opt.step(model.loss_and_grad(x, t, target)[1])

                fns = {"fmref": ours} if pair is None else {"fmref": ours, "torch": pair[0]}
                times: dict[str, list[float]] = {k: [] for k in fns}
                for i in range(warmup + repeats):
                    for name, fn in fns.items():
                        t0 = time.perf_counter()
                        fn()
                        if i >= warmup:
                            times[name].append(time.perf_counter() - t0)
                ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
                best = {k: 1e3 * float(np.min(v)) for k, v in times.items()}
                rows.append(
                    {
                        "bench": "train_step",
                        "d": d,
                        "dtype": dtype,
                        "batch": BATCH,
                        "hidden": "x".join(map(str, HIDDEN)),
                        "threads": threads,
                        "repeats": repeats,
                        "fmref_ms": ms["fmref"],
                        "torch_ms": ms.get("torch"),
                        "ratio": ms["fmref"] / ms["torch"] if "torch" in ms else None,
                        "fmref_best_ms": best["fmref"],
                        "torch_best_ms": best.get("torch"),
                        "ratio_best": best["fmref"] / best["torch"] if "torch" in best else None,
                    }
                )
    finally:
        if torch is not None:
            torch.set_num_threads(old_threads)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    out = [
        f"One CFM step, MLP {rows[0]['hidden']} SiLU, batch {rows[0]['batch']}, "
        f"{rows[0]['threads']} thread(s), median of {rows[0]['repeats']}",
        "",
        "| d | dtype | fmref ms/step | torch ms/step | fmref/torch | best: fmref | torch | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def f(v: float | None) -> str:
        return "—" if v is None else f"{v:.2f}"

    for r in rows:
        out.append(
            f"| {r['d']} | {r['dtype']} | {f(r['fmref_ms'])} | {f(r['torch_ms'])} | "
            f"{f(r['ratio'])} | {f(r['fmref_best_ms'])} | {f(r['torch_best_ms'])} | "
            f"{f(r['ratio_best'])} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    print(markdown(run(parser.parse_args().quick)))


if __name__ == "__main__":
    main()
