"""The MLP's building blocks, each backward beside its forward (micrograd style).

``Dense`` is the affine layer y = x W + b (W stored (in, out)); ``Embedding`` the lookup
e = E[y] of integer labels (rows of a learned table); an activation's ``forward``
saves what its ``derivative`` needs, and ``backward`` multiplies the incoming gradient by it.
Arrays passed as ``z`` or ``g`` are owned by the caller and may be overwritten: the model
always passes fresh temporaries, which saves a copy per layer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, final

import numpy as np

from ._xp import Array, Namespace, device, is_numpy

__all__ = ["ACTIVATIONS", "Dense", "Embedding"]


@final
class Dense:
    """Affine layer y = x W + b with W of shape (in, out)."""

    @staticmethod
    def forward(x: Array, w: Array, b: Array) -> Array:
        y = x @ w
        y += b  # y is fresh: add the bias in place instead of allocating x W + b
        return y

    @staticmethod
    def backward(x: Array, w: Array, g: Array, xp: Namespace, input_grad: bool) -> tuple:
        """Given g = ∂L/∂y return (∂L/∂x or None, ∂L/∂W = xᵀ g, ∂L/∂b = Σ_rows g)."""
        return (g @ w.T if input_grad else None), x.T @ g, xp.sum(g, axis=0)


@final
class Embedding:
    """Lookup layer e_r = E[y_r] of a table E of shape (rows, e), one integer label per row."""

    @staticmethod
    def forward(table: Array, labels: Array, xp: Namespace) -> Array:
        return xp.take(table, labels, axis=0)

    @staticmethod
    def backward(table: Array, labels: Array, g: Array, xp: Namespace) -> Array:
        """Given g = ∂L/∂e (n, e) return ∂L/∂E = Σ_r 1[y_r = j] g_r per row j of the table.

        The scatter-add is a one-hot matrix product: the array API has no indexed add, and
        the table has only a handful of rows.
        """
        rows = xp.arange(table.shape[0], device=device(g))
        onehot = xp.astype(xp.reshape(labels, (-1, 1)) == xp.reshape(rows, (1, -1)), g.dtype)
        return onehot.T @ g


def _tanh_inplace(a: Array, xp: Namespace) -> Array:
    # NumPy can write the ufunc into its input; other libraries allocate (a is always internal).
    return np.tanh(a, out=a) if is_numpy(xp) else xp.tanh(a)


class _Activation(ABC):
    """An elementwise activation: forward saves what its derivative needs."""

    name: ClassVar[str]

    @abstractmethod
    def forward(self, z: Array, xp: Namespace) -> tuple[Array, Any]:
        """Return (act(z), saved); may overwrite z, which the caller owns."""

    @abstractmethod
    def derivative(self, saved: Any, xp: Namespace) -> Array:
        """Return act'(z) as a new array."""

    def backward(self, saved: Any, g: Array, xp: Namespace) -> Array:
        """Return ∂L/∂z = g ⊙ act'(z); overwrites g, which the caller owns."""
        g *= self.derivative(saved, xp)
        return g


@final
class _SiLU(_Activation):
    """silu(z) = z σ(z); silu'(z) = σ + silu (1 − σ), from the cached σ and silu."""

    name = "silu"

    def forward(self, z: Array, xp: Namespace) -> tuple[Array, Any]:
        s = z * 0.5  # σ(z) = ½ + ½ tanh(z/2): no overflow for large |z|, unlike 1/(1 + e^{-z})
        s = _tanh_inplace(s, xp)
        s *= 0.5
        s += 0.5
        z *= s
        return z, (s, z)

    def derivative(self, saved: Any, xp: Namespace) -> Array:
        s, h = saved
        d = 1.0 - s
        d *= h
        d += s
        return d


@final
class _Tanh(_Activation):
    """tanh(z); tanh'(z) = 1 − tanh²."""

    name = "tanh"

    def forward(self, z: Array, xp: Namespace) -> tuple[Array, Any]:
        h = _tanh_inplace(z, xp)
        return h, h

    def derivative(self, saved: Any, xp: Namespace) -> Array:
        return 1.0 - saved * saved


@final
class _ReLU(_Activation):
    """relu(z) = max(z, 0); relu'(z) = 1[z > 0] (0 at the kink)."""

    name = "relu"

    def forward(self, z: Array, xp: Namespace) -> tuple[Array, Any]:
        h = xp.clip(z, min=0.0)
        return h, h

    def derivative(self, saved: Any, xp: Namespace) -> Array:
        return xp.astype(saved > 0, saved.dtype)


ACTIVATIONS: dict[str, _Activation] = {a.name: a for a in (_SiLU(), _Tanh(), _ReLU())}
