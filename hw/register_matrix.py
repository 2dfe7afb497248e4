"""A small matrix held in flip-flops: read a whole row or column, write elements in parallel.

Activations and deltas of a task are a few hundred values; keeping them in
registers lets every lane write its result in the same cycle (each element
is written by one statically known lane) and lets a job read a row (one
feature over all samples) or a column (one sample over all features) per
cycle. This is a builder used inside an ``elaborate`` (not a component).
"""

from amaranth.hdl import Array, Cat, Const, Signal, Value

__all__ = ["RegisterMatrix"]


class RegisterMatrix:
    """``rows x cols`` registers of ``shape``.

    Parameters
    ----------
    name : str
        Prefix of the register names (shows in waveforms).
    rows, cols : int
    shape : Shape
        Element shape (signed for fixed-point codes).
    const_rows : dict of int -> int
        Rows that are constants (e.g. the bias input 1.0), not registers.
    """

    def __init__(self, name: str, rows: int, cols: int, shape, const_rows: dict | None = None):
        self.name, self.rows, self.cols, self.shape = name, rows, cols, shape
        const_rows = const_rows or {}
        self.el = []
        for i in range(rows):
            if i in const_rows:
                self.el.append([Const(const_rows[i], shape) for _ in range(cols)])
            else:
                self.el.append([Signal(shape, name=f"{name}_{i}_{j}") for j in range(cols)])
        self.writable = [i not in const_rows for i in range(rows)]

    def row(self, index: Value, width: int | None = None) -> list[Value]:
        """Row ``index`` as a list of ``width`` element values (zero beyond ``cols``)."""
        width = self.cols if width is None else width
        words = Array([Cat(*r) for r in self.el])
        sel = words[index]
        return self._split(sel, self.cols, width)

    def column(self, index: Value, width: int | None = None) -> list[Value]:
        """Column ``index`` as a list of ``width`` element values (zero beyond ``rows``)."""
        width = self.rows if width is None else width
        words = Array([Cat(*(self.el[i][j] for i in range(self.rows))) for j in range(self.cols)])
        sel = words[index]
        return self._split(sel, self.rows, width)

    def _split(self, word: Value, n: int, width: int) -> list[Value]:
        w = self.shape.width
        out = []
        for k in range(width):
            if k < n:
                v = word[k * w : (k + 1) * w]
                out.append(v.as_signed() if self.shape.signed else v)
            else:
                out.append(Const(0, self.shape))
        return out
