"""A small rank-1 constraint system builder, meant to be read.

A circuit is a list of constraints ``<A, w> * <B, w> = <C, w>`` over a witness vector ``w`` whose
entry 0 is the constant 1, entries ``1..n_public`` are the public inputs, and the rest are private
(inputs and intermediate values). ``A``, ``B``, ``C`` are linear combinations (``LC``): sparse maps
from variable index to coefficient. Linear operations (adding, scaling, adding constants) only build
LCs and cost nothing; only multiplications create a new variable and a constraint.

Witness generation: every variable that is not an input carries a *hint*, a function computing its
value from earlier variables. ``Circuit.witness(inputs)`` assigns the inputs by name, runs the hints in
order, and checks every constraint, so a gadget's structure and its witness come from the same code.

    c = Circuit()
    x = c.public("x")
    y = c.private("y")
    z = c.mul(x, y)              # new variable z, constraint x * y = z
    c.assert_equal(z + 1, 13)    # constraint (z + 1 - 13) * 1 = 0
    w = c.witness({"x": 3, "y": 4})
"""

from __future__ import annotations

from typing import Callable, Iterable, Union

from zk.field import R, FieldError

__all__ = ["LC", "Circuit", "Constraint", "CircuitError", "UnsatisfiedError"]


class CircuitError(FieldError):
    """The circuit was built or fed wrongly (our misuse)."""


class UnsatisfiedError(CircuitError):
    """The inputs do not satisfy the circuit (e.g. a wrong Merkle path)."""


Term = Union["LC", int]


class LC:
    """A linear combination ``sum coeff_i * w_i`` (variable 0 is the constant 1).

    Attributes:
        terms: ``{variable index: coefficient}``, coefficients non-zero and reduced mod R.
    """

    __slots__ = ("terms",)

    def __init__(self, terms: dict[int, int] | None = None):
        self.terms = terms or {}

    @staticmethod
    def const(value: int) -> "LC":
        """The constant ``value`` as an LC."""
        value %= R
        return LC({0: value} if value else {})

    @staticmethod
    def of(x: Term) -> "LC":
        """``x`` as an LC (ints become constants)."""
        return x if isinstance(x, LC) else LC.const(x)

    def is_const(self) -> bool:
        """True when only the constant term (or nothing) is present."""
        return all(i == 0 for i in self.terms)

    def const_value(self) -> int:
        """The constant term."""
        return self.terms.get(0, 0)

    def __add__(self, other: Term) -> "LC":
        out = dict(self.terms)
        for i, c in LC.of(other).terms.items():
            v = (out.get(i, 0) + c) % R
            if v:
                out[i] = v
            else:
                out.pop(i, None)
        return LC(out)

    __radd__ = __add__

    def __neg__(self) -> "LC":
        return LC({i: R - c for i, c in self.terms.items()})

    def __sub__(self, other: Term) -> "LC":
        return self + (-LC.of(other))

    def __rsub__(self, other: Term) -> "LC":
        return LC.of(other) - self

    def __mul__(self, k: int) -> "LC":
        if isinstance(k, LC):
            raise CircuitError("LC * LC is not linear: use Circuit.mul")
        k %= R
        return LC({i: c * k % R for i, c in self.terms.items()} if k else {})

    __rmul__ = __mul__

    def eval(self, w: list[int]) -> int:
        """The value of this LC under witness ``w``."""
        return sum(c * w[i] for i, c in self.terms.items()) % R

    def __repr__(self) -> str:
        return "LC(" + " + ".join(f"{c}*w{i}" for i, c in sorted(self.terms.items())) + ")"


Constraint = tuple[LC, LC, LC]


class Circuit:
    """Builds constraints and the hints that compute a witness for them.

    Attributes:
        constraints: the ``(A, B, C)`` triples, in order.
        n_public: number of public inputs (witness entries ``1..n_public``).
        names: variable index -> name, for inputs and named intermediates.
    """

    def __init__(self) -> None:
        self.constraints: list[Constraint] = []
        self.n_public = 0
        self.names: dict[int, str] = {0: "one"}
        self._n_vars = 1
        self._inputs: dict[str, int] = {}
        self._hints: list[tuple[int, Callable[[list[int]], int]]] = []

    # -- variables ---------------------------------------------------------------------------------

    @property
    def n_vars(self) -> int:
        """Witness length, including the constant 1."""
        return self._n_vars

    def _new(self, name: str | None) -> int:
        idx = self._n_vars
        self._n_vars += 1
        if name:
            self.names[idx] = name
        return idx

    def public(self, name: str) -> LC:
        """Declare a public input (all public inputs come before any other variable)."""
        if self._n_vars != self.n_public + 1:
            raise CircuitError("declare public inputs before any private variable")
        if name in self._inputs:
            raise CircuitError(f"duplicate input {name!r}")
        idx = self._new(name)
        self.n_public += 1
        self._inputs[name] = idx
        return LC({idx: 1})

    def private(self, name: str) -> LC:
        """Declare a private input, assigned by name in ``witness``."""
        if name in self._inputs:
            raise CircuitError(f"duplicate input {name!r}")
        idx = self._new(name)
        self._inputs[name] = idx
        return LC({idx: 1})

    def intermediate(self, hint: Callable[[list[int]], int], name: str | None = None) -> LC:
        """A new private variable whose value ``hint(w)`` computes from earlier variables."""
        idx = self._new(name)
        self._hints.append((idx, hint))
        return LC({idx: 1})

    # -- constraints -------------------------------------------------------------------------------

    def constrain(self, a: Term, b: Term, c: Term) -> None:
        """Add the constraint ``a * b = c``."""
        self.constraints.append((LC.of(a), LC.of(b), LC.of(c)))

    def mul(self, a: Term, b: Term, name: str | None = None) -> LC:
        """``a * b`` as a new variable (one constraint), or an LC if either side is constant."""
        a, b = LC.of(a), LC.of(b)
        if a.is_const():
            return b * a.const_value()
        if b.is_const():
            return a * b.const_value()
        out = self.intermediate(lambda w: a.eval(w) * b.eval(w) % R, name)
        self.constrain(a, b, out)
        return out

    def assert_equal(self, a: Term, b: Term) -> None:
        """Constrain ``a == b`` (one constraint: ``(a - b) * 1 = 0``)."""
        self.constrain(LC.of(a) - LC.of(b), 1, 0)

    def assert_bit(self, x: Term) -> None:
        """Constrain ``x`` to 0 or 1 (``x * (x - 1) = 0``)."""
        x = LC.of(x)
        self.constrain(x, x - 1, 0)

    def is_zero(self, x: Term) -> LC:
        """1 if ``x == 0`` else 0 (circomlib ``IsZero``: two constraints, one inverse hint)."""
        x = LC.of(x)
        inv = self.intermediate(lambda w: pow(x.eval(w), -1, R) if x.eval(w) else 0)
        out = self.intermediate(lambda w: 0 if x.eval(w) else 1)
        self.constrain(x, inv, 1 - out)  # out = 1 - x * inv
        self.constrain(x, out, 0)
        return out

    # -- witness -----------------------------------------------------------------------------------

    def witness(self, inputs: dict[str, int], check: bool = True) -> list[int]:
        """Compute the full witness from named inputs.

        Raises:
            CircuitError: an input is missing, unknown or not a field element.
            UnsatisfiedError: the inputs violate a constraint (only when ``check``).
        """
        unknown = set(inputs) - set(self._inputs)
        missing = set(self._inputs) - set(inputs)
        if unknown or missing:
            raise CircuitError(f"inputs: unknown {sorted(unknown)}, missing {sorted(missing)}")
        w = [0] * self._n_vars
        w[0] = 1
        for name, idx in self._inputs.items():
            v = inputs[name]
            if not isinstance(v, int) or not 0 <= v < R:
                raise CircuitError(f"input {name!r} is not a field element")
            w[idx] = v
        for idx, hint in self._hints:
            w[idx] = hint(w) % R
        if check:
            bad = self.first_unsatisfied(w)
            if bad is not None:
                raise UnsatisfiedError(f"constraint {bad} is not satisfied")
        return w

    def first_unsatisfied(self, w: list[int]) -> int | None:
        """Index of the first constraint ``w`` violates, or None."""
        for k, (a, b, c) in enumerate(self.constraints):
            if a.eval(w) * b.eval(w) % R != c.eval(w):
                return k
        return None

    def matrices(self) -> tuple[list[list[tuple[int, int]]], ...]:
        """A, B, C as row lists of ``(variable, coefficient)`` pairs (for setup and proving)."""
        return tuple([list(row[m].terms.items()) for row in self.constraints] for m in range(3))

    def public_values(self, w: Iterable[int]) -> list[int]:
        """The public inputs inside a witness."""
        return list(w)[1 : 1 + self.n_public]
