"""A small hand-written MLP u_t^θ(x): forward, backward, Jacobian and divergence, all exact.

Input features φ(x, t) = [x, t, sin(2π f t), cos(2π f t) for f = 1..F], width d + 1 + 2F
(F = ``time_frequencies``; F = 0 keeps raw t only). A label-conditioned model (``n_classes`` = K)
appends a learned embedding E[y] of the class label, E a (K + 1, e) table whose last row
(label K, :attr:`MLP.null_label`) is the null label ∅ "unconditional": φ(x, t, y) = [x, t,
sin, cos, E[y]], so u_t^θ(x | y) and u_t^θ(x | ∅) are one network (classifier-free guidance
training, :func:`fmref.train.train` with ``p_uncond``). Hidden layers h_l = act(h_{l-1} W_l + b_l),
output u = h_{L-1} W_L + b_L of shape (n, d). Weights are stored (in, out), so every layer is
``x @ W + b``. Each layer's backward sits beside its forward (micrograd style); the Jacobian is
pushed forward through the same layers, so ∂u/∂x and div u are exact, not finite differences.

Initialisation (weights drawn in float64 from ``rng``, then cast; biases zero):
hidden layers use He normal N(0, 2/fan_in) for SiLU and ReLU, Glorot normal
N(0, 2/(fan_in + fan_out)) for tanh; the output layer uses N(0, 1/fan_in) scaled by 0.1 so the
untrained field is small and the first CFM loss is close to E||target||². The embedding
table, drawn after the layers (so the layers of an unlabelled model are unchanged), is
N(0, 1), like ``torch.nn.Embedding``.
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
from ._layers import ACTIVATIONS, Dense, Embedding
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

__all__ = ["MLP", "Cache", "GuidedMLP"]

#: Output-layer scale: the untrained field is ~0.1 of a unit-variance layer's output.
OUTPUT_SCALE = 0.1

#: The keys of :meth:`MLP.to_config`, all required by :meth:`MLP.from_config`.
CONFIG_KEYS = frozenset({"dim", "hidden", "activation", "time_frequencies", "dtype"})
#: The further keys of a label-conditioned model's config.
LABEL_KEYS = frozenset({"n_classes", "embedding_dim"})


@final
@dataclass(frozen=True)
class Cache:
    """What :meth:`MLP.backward` needs: each layer's input, each activation's saved arrays and
    the (n,) integer labels of a label-conditioned model (None otherwise)."""

    inputs: list[Array]
    saved: list[Any]
    labels: Array | None = None


@final
class MLP:
    """Learned field u_t^θ(x) = h_{L-1} W_L + b_L, h_l = act(h_{l-1} W_l + b_l), h_0 = φ(x, t).

    x is (n, d), t a float or (n,) in [0, 1]; u is (n, d). A label-conditioned model also takes
    the keyword ``y``: a label in [0, K) or :attr:`null_label`, or an (n,) integer array of
    them, one per row; ``y=None`` is the null label on every row (the unconditional field).
    An unlabelled model refuses any ``y``. Inputs of the model's namespace are
    cast to its dtype (a float64 batch into a float32 model is rounded; the model is never
    upcast); arrays of another namespace raise TypeError.

    Parameters
    ----------
    dim : data dimension d (input and output width).
    hidden : hidden widths, at least one, each >= 1.
    activation : "silu", "tanh" or "relu".
    time_frequencies : F >= 0 sinusoidal time features sin/cos(2π f t), f = 1..F, besides t.
    dtype : "float32" or "float64" (or that dtype object); inputs are cast to it.
    n_classes : K >= 1 to condition on labels 0..K−1 (plus the null label K), or None.
    embedding_dim : e >= 1, the width of the label embedding (used only with n_classes).
    rng : numpy.random.Generator or int seed for the initial weights.
    like : an array whose namespace and device hold the parameters (default NumPy, CPU).

    Attributes: ``params`` (W1, b1, ..., WL, bL; updated in place by optimisers, never rebound),
    ``param_names`` (``embedding``, the (K + 1, e) table, comes last), ``dim``, ``hidden``,
    ``activation``, ``time_frequencies``, ``n_classes``, ``embedding_dim`` (None without
    labels), ``dtype`` (the namespace's dtype object) and ``dtype_name``.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64, 64),
        *,
        activation: str = "silu",
        time_frequencies: int = 4,
        dtype: Any = "float64",
        n_classes: int | None = None,
        embedding_dim: int = 8,
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
        self.n_classes = None if n_classes is None else check_int(n_classes, "n_classes", low=1)
        e = check_int(embedding_dim, "embedding_dim", low=1)
        self.embedding_dim = None if n_classes is None else e
        gen = check_rng(rng)
        xp = namespace(like)
        require_mutable(xp, "like")
        self._xp = xp
        self._dev = device(like) if like is not None else "cpu"
        self.dtype_name = check_float_dtype(dtype, xp)
        self.dtype = getattr(xp, self.dtype_name)

        self._n_time = self.dim + 1 + 2 * self.time_frequencies  # columns before E[y]
        widths = [self._n_time + (self.embedding_dim or 0), *self.hidden, self.dim]
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
        self._out = 2 * len(self.hidden)  # params[_out], params[_out + 1]: W_L, b_L
        if self.n_classes is not None:
            table = gen.standard_normal((self.n_classes + 1, e))
            self.params.append(self._put(table))
            self.param_names.append("embedding")
        omega = 2.0 * math.pi * np.arange(1, self.time_frequencies + 1, dtype=np.float64)
        self._omega = self._put(omega.reshape(1, -1))

    def _put(self, a: np.ndarray) -> Array:
        return from_numpy(np.asarray(a, dtype=self.dtype_name), self._xp, self._dev, self.dtype)

    @property
    def n_params(self) -> int:
        """Number of scalar parameters."""
        return sum(math.prod(p.shape) for p in self.params)

    @property
    def null_label(self) -> int | None:
        """The null label ∅ (= n_classes, the table's last row), or None without labels."""
        return self.n_classes

    def __repr__(self) -> str:
        labels = (
            ""
            if self.n_classes is None
            else f"n_classes={self.n_classes}, embedding_dim={self.embedding_dim}, "
        )
        return (
            f"MLP(dim={self.dim}, hidden={self.hidden}, activation={self.activation!r}, "
            f"time_frequencies={self.time_frequencies}, {labels}dtype={self.dtype_name!r}, "
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

    def _labels(self, y: Any, n: int) -> Array | None:
        """Return the (n,) integer labels of the model's namespace (None without labels)."""
        if self.n_classes is None:
            if y is not None:
                raise ValueError("y: this MLP has no label embedding (build it with n_classes)")
            return None
        k = self.n_classes
        if y is None:
            lab = np.full(n, k, dtype=np.int64)
        elif isinstance(y, (int, np.integer)) and not isinstance(y, bool):
            lab = np.full(n, int(y), dtype=np.int64)
        else:
            try:
                lab = to_numpy(y)
            except (TypeError, ValueError):
                raise TypeError(f"y must be an int or an integer array, got {y!r}") from None
            if lab.dtype == bool or not np.issubdtype(lab.dtype, np.integer):
                raise TypeError(f"y must be an int or an integer array, got dtype {lab.dtype}")
            if lab.shape != (n,):
                raise ValueError(f"y must be one label or have shape ({n},), got {lab.shape}")
            lab = lab.astype(np.int64)
        if lab.size and (lab.min() < 0 or lab.max() > k):
            raise ValueError(
                f"y must lie in [0, {k}] ({k} is the null label), got labels from "
                f"{int(lab.min())} to {int(lab.max())}"
            )
        return from_numpy(lab, self._xp, self._dev, self._xp.int64)

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

    def _features(self, x: Array, t: Array, labels: Array | None) -> Array:
        """φ = [x, t, sin(ω t), cos(ω t)[, E[y]]], ω = 2π (1..F); shape (n, d + 1 + 2F [+ e])."""
        xp = self._xp
        t = xp.reshape(t, (t.shape[0], 1))
        parts = [x, t]
        if self.time_frequencies:
            arg = t * self._omega
            parts += [xp.sin(arg), xp.cos(arg)]
        if labels is not None:
            parts.append(Embedding.forward(self.params[-1], labels, xp))
        return xp.concat(parts, axis=1)

    # ---- forward and backward -------------------------------------------------------------
    def _forward(self, x: Array, t: Array, labels: Array | None) -> tuple[Array, Cache]:
        xp, p, act, o = self._xp, self.params, self._act, self._out
        h = self._features(x, t, labels)
        inputs, saved = [], []
        for i in range(len(self.hidden)):
            inputs.append(h)
            h, s = act.forward(Dense.forward(h, p[2 * i], p[2 * i + 1]), xp)
            saved.append(s)
        inputs.append(h)
        return Dense.forward(h, p[o], p[o + 1]), Cache(inputs, saved, labels)

    def forward(self, x: Array, t: Any, *, y: Any = None) -> tuple[Array, Cache]:
        """Return u_t^θ(x[ | y]) of shape (n, d) and the cache that :meth:`backward` needs."""
        x, t = self._inputs(x, t)
        return self._forward(x, t, self._labels(y, x.shape[0]))

    def __call__(self, x: Array, t: Any, *, y: Any = None) -> Array:
        """Evaluate u_t^θ(x[ | y]): x (n, d), t a float or (n,) in [0, 1] → (n, d)."""
        return self.forward(x, t, y=y)[0]

    def backward(self, cache: Cache, grad_out: Array) -> list[Array]:
        """Return ∂L/∂θ for every parameter (order and shapes of ``params``), given ∂L/∂u."""
        if not isinstance(cache, Cache):
            raise TypeError(f"cache must come from MLP.forward, got {type(cache).__name__}")
        g = self._cast(grad_out, "grad_out")
        n = cache.inputs[0].shape[0]
        if g.shape[0] != n:
            raise ValueError(f"grad_out must have shape ({n}, {self.dim}), got {tuple(g.shape)}")
        xp, p, act = self._xp, self.params, self._act
        if (cache.labels is None) != (self.n_classes is None):
            raise ValueError("cache: it comes from a model with another label embedding")
        grads: list[Array] = [None] * len(p)
        for i in reversed(range(len(cache.inputs))):
            g_in, grads[2 * i], grads[2 * i + 1] = Dense.backward(
                cache.inputs[i], p[2 * i], g, xp, input_grad=i > 0
            )
            if i > 0:
                g = act.backward(cache.saved[i - 1], g_in, xp)
        if cache.labels is not None:
            # ∂L/∂E[y] is the gradient of W1's input in the embedding's columns only.
            g_emb = g @ p[0][self._n_time :, :].T
            grads[-1] = Embedding.backward(p[-1], cache.labels, g_emb, xp)
        return grads

    def loss_and_grad(
        self, x: Array, t: Any, target: Array, *, y: Any = None
    ) -> tuple[float, list[Array]]:
        """Return L = (1/n) Σ_rows ||u_t^θ(x[ | y]) − target||² and ∂L/∂θ (one forward, one
        backward)."""
        out, cache = self.forward(x, t, y=y)
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
    def _tangents(self, x: Array, t: Array, labels: Array | None) -> Array:
        """Push ∂/∂x_j through the hidden layers: T[r, j, k] = ∂h_{L-1,k}/∂x_j, shape (n, d, w).

        Only x's own columns of φ depend on x (t and E[y] do not), so labels change the
        activations but not the exactness of the pushed-forward tangents.
        """
        xp, p, act, d, n = self._xp, self.params, self._act, self.dim, x.shape[0]
        h = self._features(x, t, labels)
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

    def _chunked(self, x: Any, t: Any, y: Any, fn: Any) -> Array:
        x, t = self._inputs(x, t)
        lab = self._labels(y, x.shape[0])
        itemsize = 4 if self.dtype_name == "float32" else 8
        row_bytes = 3 * self.dim * max(*self.hidden, self.dim) * itemsize
        parts = [
            fn(self._tangents(x[sl, :], t[sl], None if lab is None else lab[sl]))
            for sl in chunks(x.shape[0], row_bytes)
        ]
        return concat_rows(parts, self._xp) if parts else fn(self._tangents(x, t, lab))

    def jacobian(self, x: Array, t: Any, *, y: Any = None) -> Array:
        """Return ∇u_t^θ(x[ | y])[r, i, j] = ∂u_i/∂x_j, shape (n, d, d), by forward mode."""
        xp, d, w_out = self._xp, self.dim, self.params[self._out]

        def jac(tan: Array) -> Array:
            n = tan.shape[0]
            jt = xp.reshape(xp.reshape(tan, (n * d, tan.shape[2])) @ w_out, (n, d, d))
            return xp.permute_dims(jt, (0, 2, 1))

        return self._chunked(x, t, y, jac)

    def divergence(self, x: Array, t: Any, *, y: Any = None) -> Array:
        """Return div u_t^θ(x[ | y]) = Σ_j ∂u_j/∂x_j = Σ_{j,k} T[r, j, k] W_L[k, j], shape (n,)."""
        w_out_t = self.params[self._out].T
        return self._chunked(x, t, y, lambda tan: self._xp.sum(tan * w_out_t, axis=(1, 2)))

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
        """Return the JSON-serialisable architecture that :meth:`from_config` rebuilds.

        A label-conditioned model adds ``n_classes`` and ``embedding_dim``.
        """
        config = {
            "dim": self.dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "time_frequencies": self.time_frequencies,
            "dtype": self.dtype_name,
        }
        if self.n_classes is not None:
            config.update(n_classes=self.n_classes, embedding_dim=self.embedding_dim)
        return config

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
        if set(config) not in (CONFIG_KEYS, CONFIG_KEYS | LABEL_KEYS):
            raise ValueError(
                f"config must have exactly the keys {sorted(CONFIG_KEYS)}, plus "
                f"{sorted(LABEL_KEYS)} for a label-conditioned model"
            )
        if state is None and rng is None:
            raise TypeError("rng is required when no state is given")
        # With a state every weight is overwritten, so the initial draw does not matter.
        model = cls(**config, rng=0 if rng is None else rng, like=like)
        if state is not None:
            model.load_state_dict(state)
        return model


@final
@dataclass(frozen=True, eq=False)
class GuidedMLP:
    """The learned CFG field ũ^w_t(x | y) = (1 − w) u^θ_t(x | ∅) + w u^θ_t(x | y).

    The learned counterpart of :class:`fmref.guidance.CFG` (same convention of w, combined by
    the same function): one label-conditioned :class:`MLP` evaluated at the null label and at
    y. ``divergence`` and ``jacobian`` are the same combination of the model's exact
    forward-mode ones, so :func:`fmref.log_likelihood` of ``guided.vector_field`` is exact.

    Parameters
    ----------
    model : a label-conditioned MLP (``n_classes`` set).
    y : a class label in [0, n_classes), or an (n,) integer array of them.
    w : guidance weight >= 0 (0: unconditional, 1: conditional).
    """

    model: MLP
    y: Any
    w: float

    def __post_init__(self) -> None:
        from .guidance import _weight

        if not isinstance(self.model, MLP):
            raise TypeError(f"model must be an MLP, got {type(self.model).__name__}")
        if self.model.n_classes is None:
            raise ValueError("model: guidance needs a label-conditioned MLP (n_classes set)")
        object.__setattr__(self, "w", _weight(self.w))

    @property
    def dim(self) -> int:
        return self.model.dim

    def _combine(self, method: str, x: Any, t: Any) -> Array:
        from .guidance import _mix

        fn = getattr(self.model, method)
        if self.w == 0.0:
            return fn(x, t)
        cond = fn(x, t, y=self.y)
        return cond if self.w == 1.0 else _mix(fn(x, t), cond, self.w)

    def vector_field(self, x: Any, t: Any) -> Array:
        """ũ^w_t(x | y), shape (n, d)."""
        return self._combine("__call__", x, t)

    def __call__(self, x: Any, t: Any) -> Array:
        return self.vector_field(x, t)

    def divergence(self, x: Any, t: Any) -> Array:
        """div ũ^w = (1 − w) div u^θ(· | ∅) + w div u^θ(· | y), shape (n,)."""
        return self._combine("divergence", x, t)

    def jacobian(self, x: Any, t: Any) -> Array:
        """∇ũ^w, entry [i, j] = ∂ũ_i/∂x_j, shape (n, d, d)."""
        return self._combine("jacobian", x, t)
