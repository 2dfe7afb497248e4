"""A small matrix held in flip-flops, written a pass of ``P`` lanes at a time.

Activations and deltas of a task are a few hundred values. The matrix is
stored row-major and cut into *words* of ``P`` consecutive elements: the
``P`` lanes of a job pass produce exactly one such word (lane ``p`` of pass
``t`` computes flat element ``t P + p``), so a pass is written with one
register update, and every element is written by one statically known
lane. Reads take a whole row (one feature over all samples) or a whole
column (one sample over all features) through a multiplexer. This is a
builder used inside an ``elaborate`` (not a component).
"""

from amaranth.hdl import Array, Cat, Const, Signal, Value

__all__ = ["RegisterMatrix"]


class RegisterMatrix:
    """``rows x cols`` elements of ``shape`` in words of ``lanes`` elements.

    Parameters
    ----------
    name : str
        Prefix of the register names (shows in waveforms).
    rows, cols : int
        Stored rows and columns.
    shape : Shape
        Element shape (signed for fixed-point codes).
    lanes : int
        Elements per word (the engine's ``P``).
    const_row : int or None
        The value of one extra, constant last row (the bias input 1.0) that
        :meth:`row` and :meth:`column` include but nothing stores.
    """

    def __init__(self, name: str, rows: int, cols: int, shape, lanes: int, const_row: int | None = None):
        self.name, self.rows, self.cols, self.shape, self.lanes = name, rows, cols, shape, lanes
        self.const_row = const_row
        n = rows * cols
        self.n_words = -(-n // lanes)
        w = shape.width
        self.words = [Signal(lanes * w, name=f"{name}_w{t}") for t in range(self.n_words)]

    @property
    def view_rows(self) -> int:
        """Rows seen by :meth:`row`/:meth:`column` (the constant row included)."""
        return self.rows + (self.const_row is not None)

    def el(self, i: int, j: int) -> Value:
        """Element ``(i, j)`` as a value of the element shape."""
        if i == self.rows and self.const_row is not None:
            return Const(self.const_row, self.shape)
        t, p = divmod(i * self.cols + j, self.lanes)
        w = self.shape.width
        v = self.words[t][p * w : (p + 1) * w]
        return v.as_signed() if self.shape.signed else v

    def word_slice(self, i: int, j: int) -> tuple[Signal, int, int]:
        """``(word, lo, hi)``: where element ``(i, j)`` is stored."""
        t, p = divmod(i * self.cols + j, self.lanes)
        w = self.shape.width
        return self.words[t], p * w, (p + 1) * w

    def row(self, index: Value, width: int | None = None) -> list[Value]:
        """Row ``index`` as ``width`` element values (zero beyond ``cols``)."""
        width = self.cols if width is None else width
        rows = Array([Cat(*(self.el(i, j) for j in range(self.cols))) for i in range(self.view_rows)])
        return self._split(rows[index], self.cols, width)

    def column(self, index: Value, width: int | None = None) -> list[Value]:
        """Column ``index`` as ``width`` element values (zero beyond the rows)."""
        width = self.view_rows if width is None else width
        cols = Array([Cat(*(self.el(i, j) for i in range(self.view_rows))) for j in range(self.cols)])
        return self._split(cols[index], self.view_rows, width)

    def write_pass(self, m, enable: Value, t: Value, lanes: list[Value]):
        """In the cycle of ``enable``, store the lanes' values as word ``t``."""
        w = self.shape.width
        data = Cat(*(v[:w] for v in lanes[: self.lanes]))
        for tt, word in enumerate(self.words):
            with m.If(enable & (t == tt)):
                m.d.sync += word.eq(data)

    def word_array(self) -> Array:
        """The words, indexable by a pass number."""
        return Array(self.words)

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
