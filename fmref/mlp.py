"""A small hand-written MLP u_t^θ(x): forward, backward, Jacobian and divergence, all exact.

Input features φ(x, t) = [x, t, sin(2π f t), cos(2π f t) for f = 1..F], width d + 1 + 2F
(F = ``time_frequencies``; F = 0 keeps raw t only). Hidden layers h_l = act(h_{l-1} W_l + b_l),
output u = h_{L-1} W_L + b_L of shape (n, d). Weights are stored (in, out), so every layer is
``x @ W + b``. Each layer's backward sits beside its forward (micrograd style); the Jacobian is
pushed forward through the same layers, so ∂u/∂x and div u are exact, not finite differences.

Initialisation (weights drawn in float64 from ``rng``, then cast; biases zero):
hidden layers use He normal N(0, 2/fan_in) for SiLU and ReLU, Glorot normal
N(0, 2/(fan_in + fan_out)) for tanh; the output layer uses N(0, 1/fan_in) scaled by 0.1 so the
untrained field is small and the first CFM loss is close to E||target||².
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, final

import numpy as np

from ._check import check_choice, check_float_dtype, check_int, check_rng
from ._checkpoint import check_float_states
from ._layers import ACTIVATIONS, Dense
from ._xp import (
    Array,
    chunks,
    concat_rows,
    device,
    float_array,
    from_numpy,
    namespace,
    require_mutable,
    times,
    to_numpy,
)

__all__ = ["MLP", "Cache"]

#: Output-layer scale: the untrained field is ~0.1 of a unit-variance layer's output.
OUTPUT_SCALE = 0.1

#: The keys of :meth:`MLP.to_config`, all required by :meth:`MLP.from_config`.
CONFIG_KEYS = frozenset({"dim", "hidden", "activation", "time_frequencies", "dtype"})


@final
@dataclass(frozen=True)
class Cache:
    """What :meth:`MLP.backward` needs: each layer's input and each activation's saved arrays."""

    inputs: list[Array]
    saved: list[Any]


@final
class MLP:
    """Learned field u_t^θ(x) = h_{L-1} W_L + b_L, h_l = act(h_{l-1} W_l + b_l), h_0 = φ(x, t).

    x is (n, d), t a float or (n,) in [0, 1]; u is (n, d). Inputs of the model's namespace are
    cast to its dtype (a float64 batch into a float32 model is rounded; the model is never
    upcast); arrays of another namespace raise TypeError.

    Parameters
    ----------
    dim : data dimension d (input and output width).
    hidden : hidden widths, at least one, each >= 1.
    activation : "silu", "tanh" or "relu".
    time_frequencies : F >= 0 sinusoidal time features sin/cos(2π f t), f = 1..F, besides t.
    dtype : "float32" or "float64" (or that dtype object); inputs are cast to it.
    rng : numpy.random.Generator or int seed for the initial weights.
    like : an array whose namespace and device hold the parameters (default NumPy, CPU).

    Attributes: ``params`` (W1, b1, ..., WL, bL; updated in place by optimisers, never rebound),
    ``param_names``, ``dim``, ``hidden``, ``activation``, ``time_frequencies``, ``dtype`` (the
    namespace's dtype object) and ``dtype_name``.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64, 64),
        *,
        activation: str = "silu",
        time_frequencies: int = 4,
        dtype: Any = "float64",
        rng: np.random.Generator | int,
        like: Array | None = None,
    ) -> None:
        self.dim = check_int(dim, "dim", low=1)
        if isinstance(hidden, (int, str, np.integer)) or not isinstance(hidden, Sequence):
            raise TypeError(f"hidden must be a sequence of widths, got {hidden!r}")
        if not hidden:
            raise ValueError("hidden must hold at least one width, got an empty sequence")
        self.hidden = tuple(check_int(w, f"hidden[{i}]", low=1) for i, w in enumerate(hidden))
        self.activation = check_choice(activation, "activation", sorted(ACTIVATIONS))
        self._act = ACTIVATIONS[activation]
        self.time_frequencies = check_int(time_frequencies, "time_frequencies", low=0)
        gen = check_rng(rng)
        xp = namespace(like)
        require_mutable(xp, "like")
        self._xp = xp
        self._dev = device(like) if like is not None else "cpu"
        self.dtype_name = check_float_dtype(dtype, xp)
        self.dtype = getattr(xp, self.dtype_name)

        widths = [self.dim + 1 + 2 * self.time_frequencies, *self.hidden, self.dim]
        self.params: list[Array] = []
        self.param_names: list[str] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            if i == len(self.hidden):
                std = OUTPUT_SCALE / math.sqrt(fan_in)
            elif activation == "tanh":
                std = math.sqrt(2.0 / (fan_in + fan_out))
            else:
                std = math.sqrt(2.0 / fan_in)
            w = gen.standard_normal((fan_in, fan_out)) * std
            self.params += [self._put(w), self._put(np.zeros(fan_out))]
            self.param_names += [f"W{i + 1}", f"b{i + 1}"]
        omega = 2.0 * math.pi * np.arange(1, self.time_frequencies + 1, dtype=np.float64)
        self._omega = self._put(omega.reshape(1, -1))

    def _put(self, a: np.ndarray) -> Array:
        return from_numpy(np.asarray(a, dtype=self.dtype_name), self._xp, self._dev, self.dtype)

    @property
    def n_params(self) -> int:
        """Number of scalar parameters."""
        return sum(math.prod(p.shape) for p in self.params)

    def __repr__(self) -> str:
        return (
            f"MLP(dim={self.dim}, hidden={self.hidden}, activation={self.activation!r}, "
            f"time_frequencies={self.time_frequencies}, dtype={self.dtype_name!r}, "
            f"n_params={self.n_params})"
        )

    # ---- input handling -------------------------------------------------------------------
    def _cast(self, a: Array, name: str) -> Array:
        a, axp = float_array(a, name, ndim=2)
        if axp is not self._xp:
            raise TypeError(f"{name} must be an array of the model's namespace {self._xp.__name__}")
        if a.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (n, {self.dim}), got {tuple(a.shape)}")
        return a if a.dtype == self.dtype else self._xp.astype(a, self.dtype)

    def _inputs(self, x: Array, t: Any) -> tuple[Array, Array]:
        x = self._cast(x, "x")
        xp = self._xp
        if not isinstance(t, (bool, int, float, np.generic, list, tuple)):
            try:
                same = namespace(t) is xp
            except TypeError:
                same = False
            if same and xp.isdtype(t.dtype, "real floating") and t.dtype != self.dtype:
                t = xp.astype(t, self.dtype)
        return x, times(t, x.shape[0], xp, self.dtype, self._dev)

    def _features(self, x: Array, t: Array) -> Array:
        """φ(x, t) = [x, t, sin(ω t), cos(ω t)], ω = 2π (1..F); shape (n, d + 1 + 2F)."""
        xp = self._xp
        t = xp.reshape(t, (t.shape[0], 1))
        if not self.time_frequencies:
            return xp.concat([x, t], axis=1)
        arg = t * self._omega
        return xp.concat([x, t, xp.sin(arg), xp.cos(arg)], axis=1)

    # ---- forward and backward -------------------------------------------------------------
    def _forward(self, x: Array, t: Array) -> tuple[Array, Cache]:
        xp, p, act = self._xp, self.params, self._act
        h = self._features(x, t)
        inputs, saved = [], []
        for i in range(len(self.hidden)):
            inputs.append(h)
            h, s = act.forward(Dense.forward(h, p[2 * i], p[2 * i + 1]), xp)
            saved.append(s)
        inputs.append(h)
        return Dense.forward(h, p[-2], p[-1]), Cache(inputs, saved)

    def forward(self, x: Array, t: Any) -> tuple[Array, Cache]:
        """Return u_t^θ(x) of shape (n, d) and the cache that :meth:`backward` needs."""
        return self._forward(*self._inputs(x, t))

    def __call__(self, x: Array, t: Any) -> Array:
        """Evaluate u_t^θ(x): x (n, d), t a float or (n,) in [0, 1] → (n, d)."""
        return self.forward(x, t)[0]

    def backward(self, cache: Cache, grad_out: Array) -> list[Array]:
        """Return ∂L/∂θ for every parameter (order and shapes of ``params``), given ∂L/∂u."""
        if not isinstance(cache, Cache):
            raise TypeError(f"cache must come from MLP.forward, got {type(cache).__name__}")
        g = self._cast(grad_out, "grad_out")
        n = cache.inputs[0].shape[0]
        if g.shape[0] != n:
            raise ValueError(f"grad_out must have shape ({n}, {self.dim}), got {tuple(g.shape)}")
        xp, p, act = self._xp, self.params, self._act
        grads: list[Array] = [None] * len(p)
        for i in reversed(range(len(cache.inputs))):
            g_in, grads[2 * i], grads[2 * i + 1] = Dense.backward(
                cache.inputs[i], p[2 * i], g, xp, input_grad=i > 0
            )
            if i > 0:
                g = act.backward(cache.saved[i - 1], g_in, xp)
        return grads

    def loss_and_grad(self, x: Array, t: Any, target: Array) -> tuple[float, list[Array]]:
        """Return L = (1/n) Σ_rows ||u_t^θ(x) − target||² and ∂L/∂θ (one forward, one backward)."""
        out, cache = self.forward(x, t)
        target = self._cast(target, "target")
        if target.shape != out.shape:
            raise ValueError(f"target must have shape {tuple(out.shape)}, got {target.shape}")
        n = out.shape[0]
        if n == 0:
            raise ValueError("x must hold at least one row to define a mean loss")
        out -= target  # out is fresh: reuse it as the residual
        loss = float(self._xp.sum(out * out)) / n
        out *= 2.0 / n
        return loss, self.backward(cache, out)

    # ---- forward-mode derivatives in x ------------------------------------------------------
    def _tangents(self, x: Array, t: Array) -> Array:
        """Push ∂/∂x_j through the hidden layers: T[r, j, k] = ∂h_{L-1,k}/∂x_j, shape (n, d, w)."""
        xp, p, act, d, n = self._xp, self.params, self._act, self.dim, x.shape[0]
        h = self._features(x, t)
        tan = None
        for i, w in enumerate(self.hidden):
            h, s = act.forward(Dense.forward(h, p[2 * i], p[2 * i + 1]), xp)
            dact = xp.reshape(act.derivative(s, xp), (n, 1, w))
            if tan is None:  # only the first d feature rows of W1 depend on x
                tan = dact * p[0][:d, :]
            else:
                flat = xp.reshape(tan, (n * d, self.hidden[i - 1]))
                tan = xp.reshape(flat @ p[2 * i], (n, d, w))
                tan *= dact
        return tan

    def _chunked(self, x: Any, t: Any, fn: Any) -> Array:
        x, t = self._inputs(x, t)
        itemsize = 4 if self.dtype_name == "float32" else 8
        row_bytes = 3 * self.dim * max(*self.hidden, self.dim) * itemsize
        parts = [fn(self._tangents(x[sl, :], t[sl])) for sl in chunks(x.shape[0], row_bytes)]
        return concat_rows(parts, self._xp) if parts else fn(self._tangents(x, t))

    def jacobian(self, x: Array, t: Any) -> Array:
        """Return ∇u_t^θ(x)[r, i, j] = ∂u_i/∂x_j, shape (n, d, d), by forward mode."""
        xp, d, w_out = self._xp, self.dim, self.params[-2]

        def jac(tan: Array) -> Array:
            n = tan.shape[0]
            jt = xp.reshape(xp.reshape(tan, (n * d, tan.shape[2])) @ w_out, (n, d, d))
            return xp.permute_dims(jt, (0, 2, 1))

        return self._chunked(x, t, jac)

    def divergence(self, x: Array, t: Any) -> Array:
        """Return div u_t^θ(x) = Σ_j ∂u_j/∂x_j = Σ_{j,k} T[r, j, k] W_L[k, j], shape (n,)."""
        w_out_t = self.params[-2].T
        return self._chunked(x, t, lambda tan: self._xp.sum(tan * w_out_t, axis=(1, 2)))

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Return a NumPy copy of every parameter, keyed by ``param_names``."""
        return {
            k: np.array(to_numpy(v), copy=True)
            for k, v in zip(self.param_names, self.params, strict=True)
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy parameters in place from ``state`` (all checked before any is written)."""
        check_float_states(state)
        new = [self._put(a) for a in self._checked_state(state)]
        for p, a in zip(self.params, new, strict=True):
            p[...] = a  # in place: optimisers hold references to these arrays

    def _checked_state(self, state: Mapping[str, Any]) -> list[np.ndarray]:
        """Return ``state``'s arrays as NumPy in ``param_names`` order, each checked."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping of name -> array, got {type(state).__name__}")
        names = self.param_names
        missing = [k for k in names if k not in state]
        extra = [k for k in state if k not in names]
        if missing or extra:
            raise ValueError(f"state keys do not match: missing {missing}, unexpected {extra}")
        out = []
        for name, p in zip(names, self.params, strict=True):
            a = to_numpy(state[name])
            if a.shape != tuple(p.shape):
                raise ValueError(f"state[{name!r}] has shape {a.shape}, expected {tuple(p.shape)}")
            if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)):
                raise ValueError(f"state[{name!r}] must be a finite floating array")
            out.append(a)
        return out

    def to_config(self) -> dict[str, Any]:
        """Return the JSON-serialisable architecture that :meth:`from_config` rebuilds."""
        return {
            "dim": self.dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "time_frequencies": self.time_frequencies,
            "dtype": self.dtype_name,
        }

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        state: Mapping[str, Any] | None = None,
        *,
        rng: np.random.Generator | int | None = None,
        like: Array | None = None,
    ) -> MLP:
        """Rebuild a model from :meth:`to_config`; load ``state`` if given, else draw from rng."""
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping, got {type(config).__name__}")
        if set(config) != CONFIG_KEYS:
            raise ValueError(f"config must have exactly the keys {sorted(CONFIG_KEYS)}")
        if state is None and rng is None:
            raise TypeError("rng is required when no state is given")
        # With a state every weight is overwritten, so the initial draw does not matter.
        model = cls(**config, rng=0 if rng is None else rng, like=like)
        if state is not None:
            model.load_state_dict(state)
        return model
