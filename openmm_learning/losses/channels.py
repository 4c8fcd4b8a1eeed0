"""The channel types of a model: which functions a model holds and their two forms.

Every model has the channels CHANNEL_KEYS (agent, neighbour, kind), each a natural cubic
spline on a uniform grid (Channel, what the fit solves for) or the Chebyshev series it
compiles to (ChebyshevChannel). Kept apart from LossModel so that the term plan
(losses.terms) and the model (losses.model) both read them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import kernels

#: (agent, neighbour, kind) of every channel, in the order used everywhere.
CHANNEL_KEYS = (
    ("O", "O", "inter"),
    ("O", "H", "inter"),
    ("O", "H", "intra"),
    ("O", None, "angle"),
    ("H", "O", "inter"),
    ("H", "H", "inter"),
    ("H", "O", "intra"),
    ("H", "H", "intra"),
    ("H", None, "angle"),
)
KIND_CODES = {"inter": kernels.KIND_INTER, "intra": kernels.KIND_INTRA, "angle": kernels.KIND_ANGLE}

#: Channels that reciprocal mode ties together (the same function seen from both ends).
RECIPROCAL_TIES = (
    (("O", "H", "inter"), ("H", "O", "inter")),
    (("O", "H", "intra"), ("H", "O", "intra")),
    (("O", None, "angle"), ("H", None, "angle")),
)



def channel_name(key) -> str:
    agent, neighbour, kind = key
    return f"{agent}:angle" if kind == "angle" else f"{agent}:{agent}-{neighbour}:{kind}"


def natural_spline_matrix(n: int, h: float) -> np.ndarray:
    """M with z = M @ y: second derivatives of the natural cubic spline through y."""
    A = np.zeros((n, n))
    B = np.zeros((n, n))
    A[0, 0] = A[-1, -1] = 1.0
    for i in range(1, n - 1):
        A[i, i - 1] = A[i, i + 1] = h / 6.0
        A[i, i] = 2.0 * h / 3.0
        B[i, i - 1] = B[i, i + 1] = 1.0 / h
        B[i, i] = -2.0 / h
    return np.linalg.solve(A, B)


@dataclass
class Channel:
    """One fitted function: natural cubic spline values on x0 + h * k, k = 0..n-1."""

    #: the function's form; each engine's emitter dispatches on it (losses.terms)
    basis = "natural cubic spline"

    agent: str
    neighbour: str | None
    kind: str
    x0: float
    h: float
    values: np.ndarray

    @property
    def key(self):
        return (self.agent, self.neighbour, self.kind)

    @property
    def name(self) -> str:
        return channel_name(self.key)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def x1(self) -> float:
        return self.x0 + (self.n - 1) * self.h

    @property
    def grid(self) -> np.ndarray:
        return self.x0 + self.h * np.arange(self.n)

    def second_derivatives(self) -> np.ndarray:
        return natural_spline_matrix(self.n, self.h) @ self.values

    def same_form(self, other) -> bool:
        """Same basis on the same grid: the two functions differ in their values only."""
        return (self.basis, self.x0, self.h, self.n) == (other.basis, other.x0, other.h, other.n)

    def to_dict(self) -> dict:
        return {"name": self.name, "agent": self.agent, "neighbour": self.neighbour, "kind": self.kind,
                "x0": self.x0, "h": self.h, "values": [float(v) for v in self.values]}


@dataclass
class ChebyshevChannel:
    """One compiled function: sum_k values[k] T_k(2w - 1) on [x0, x1], w = (x - x0)/(x1 - x0)
    for a bond or the angle; for an intermolecular pair w = (1/x0 - 1/r)/(1/x0 - 1/x1) and
    the series is multiplied by (1 - w)^3 (which ends it smoothly at x1 = r_cut instead of
    the spline's switch). Engines emit it as an expression; kernels.chebyshev_series."""

    basis = "chebyshev"

    agent: str
    neighbour: str | None
    kind: str
    x0: float
    x1: float
    values: np.ndarray

    key = Channel.key
    name = Channel.name
    n = Channel.n

    @property
    def h(self) -> float:
        """The span x1 - x0 (the kernels read a polynomial's span where a spline has its step)."""
        return self.x1 - self.x0

    def second_derivatives(self) -> np.ndarray:
        return np.zeros(self.n)  # the kernels' z: unused by a polynomial

    def same_form(self, other) -> bool:
        return (self.basis, self.x0, self.x1, self.n) == (other.basis, other.x0, other.x1, other.n)

    def to_dict(self) -> dict:
        return {"name": self.name, "agent": self.agent, "neighbour": self.neighbour, "kind": self.kind,
                "basis": self.basis, "x0": self.x0, "x1": self.x1, "values": [float(v) for v in self.values]}


#: kernels' basis code of each channel class
BASIS_CODES = {Channel.basis: kernels.BASIS_SPLINE, ChebyshevChannel.basis: kernels.BASIS_CHEBYSHEV}
