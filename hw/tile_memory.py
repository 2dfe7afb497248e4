"""A matrix stored in tile words: one memory word holds a ``gr x gc`` tile of elements.

The MAML engine keeps every matrix (inputs, activations, ReLU masks, targets,
deltas, weights) in one :class:`~amaranth.lib.memory.Memory` per matrix
whose word is a tile (see :class:`metafab.hw.maml_schedule.Tensor`): every
access of a job touches one word, so one read port and one write port (with
per-element write enables) serve a matrix, and the storage maps to LUT RAM
or block RAM instead of flip-flops.

The memories carry the Yosys attribute ``no_rw_check``: the engine's
schedule never reads a word in the cycle it is written
(:func:`metafab.hw.maml_schedule._timeline` checks it), so no collision
logic is synthesised.
"""

from amaranth.hdl import Const, Signal, Value, signed, unsigned
from amaranth.lib.memory import Memory

__all__ = ["TileMemory"]


class TileMemory:
    """Builder (used inside an ``elaborate``) of the memory of one or more stored matrices.

    Parameters
    ----------
    name : str
        Memory name (shows in the netlist).
    depth : int
        Words.
    elements : int
        Elements per word.
    width : int
        Bits per element.
    signed_ : bool
        Elements are two's complement codes.
    init : list of int, optional
        Initial element values, word by word (``depth * elements`` codes).
    read_ports : int
        Synchronous read ports (one per concurrent reader). Read data is
        registered once more (:attr:`rdata`): an address presented in cycle
        ``c`` gives data in ``rdata`` in cycle ``c + 2``.
    """

    def __init__(self, name: str, *, depth: int, elements: int, width: int, signed_: bool = True,
                 init=None, read_ports: int = 1):
        self.name, self.depth, self.elements, self.width = name, depth, elements, width
        self.signed = signed_
        words = None
        if init is not None:
            mask = (1 << width) - 1
            words = []
            for w in range(depth):
                v = 0
                for e in range(elements):
                    v |= (int(init[w * elements + e]) & mask) << (e * width)
                words.append(v)
        self.memory = Memory(shape=unsigned(elements * width), depth=max(depth, 1),
                             init=words or [], attrs={"no_rw_check": 1})
        self.write = self.memory.write_port(granularity=width)
        self.reads = [self.memory.read_port() for _ in range(read_ports)]
        # block RAM outputs are slow (about 6 ns clock-to-out on ECP5 without the RAM's own
        # output register): every read lands in a register before any logic
        self.rdata = [Signal(elements * width, name=f"{name}_rdata{i}") for i in range(read_ports)]

    def elaborate_into(self, m, name: str):
        """Add the memory to module ``m`` as submodule ``name`` with its read-data registers."""
        m.submodules[name] = self.memory
        m.d.sync += [r.eq(p.data) for r, p in zip(self.rdata, self.reads, strict=True)]

    @property
    def shape(self):
        return signed(self.width) if self.signed else unsigned(self.width)

    def element(self, word: Value, e: int) -> Value:
        """Element ``e`` of a word value, with the element's signedness."""
        v = word[e * self.width : (e + 1) * self.width]
        return v.as_signed() if self.signed else v

    def element_of(self, port: int, e: int) -> Value:
        """Element ``e`` of read port ``port``'s registered data (two cycles after the address)."""
        return self.element(self.rdata[port], e)

    def zero(self) -> Const:
        return Const(0, self.shape)
