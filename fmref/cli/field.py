"""``fmref field``: print the exact marginal quantities of a named data set at a few points."""

from __future__ import annotations

import argparse

import numpy as np

from ..marginals import MarginalPath
from ..mixtures import DATASETS
from ..schedules import SCHEDULES, Schedule


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", choices=sorted(DATASETS), default="eight_gaussians")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default="linear")
    p.add_argument("--t", type=float, default=0.5, help="time in [0, 1] (default 0.5)")
    p.add_argument("--n", type=int, default=5, help="number of points drawn from p_t")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    schedule: Schedule = SCHEDULES[args.schedule]()
    mp = MarginalPath(DATASETS[args.data](), schedule)
    x = mp.sample(args.n, args.t, rng=np.random.default_rng(args.seed))
    r = mp.evaluate(x, args.t, ("log_prob", "vector_field", "divergence", "score"))
    print(f"{mp!r} at t = {args.t}")
    print(f"{'x':>22}  {'log p_t':>9}  {'u_t(x)':>22}  {'div u_t':>9}")
    for i in range(args.n):
        xs = ", ".join(f"{v:8.4f}" for v in x[i, :2])
        us = ", ".join(f"{v:8.4f}" for v in r["vector_field"][i, :2])
        print(f"({xs})  {r['log_prob'][i]:9.4f}  ({us})  {r['divergence'][i]:9.4f}")
    return 0
