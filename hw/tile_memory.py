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

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Signal, Value, signed, unsigned
from amaranth.lib.memory import Memory

from metafab.hw.fixed import replicated_register

__all__ = ["TileMemory", "PART_BITS"]

#: Widest physical memory a tile memory is split into (bits): each part has its own copy of a
#: registered read address, so no address register drives a whole wide tile word across the chip.
PART_BITS = 64


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

    The word is stored in ``parts`` physical memories of at most
    :data:`PART_BITS` bits (whole elements each), written and read together.
    ``write`` (``addr``, ``data``, ``en`` per element) and ``reads[i].addr``
    are signals the engine drives; :meth:`read_next` instead gives a read
    port the address of the next cycle, registered in one copy per part, and
    :meth:`write_next` the same for the write address.
    """

    def __init__(self, name: str, *, depth: int, elements: int, width: int, signed_: bool = True,
                 init=None, read_ports: int = 1):
        self.name, self.depth, self.elements, self.width = name, depth, elements, width
        self.signed = signed_
        self.part_elements = max(1, min(elements, PART_BITS // width))
        self.parts = -(-elements // self.part_elements)
        mask = (1 << width) - 1
        self.memories = []
        for p in range(self.parts):
            lo, hi = p * self.part_elements, min(elements, (p + 1) * self.part_elements)
            words = None
            if init is not None:
                words = []
                for w in range(depth):
                    v = 0
                    for e in range(lo, hi):
                        v |= (int(init[w * elements + e]) & mask) << ((e - lo) * width)
                    words.append(v)
            self.memories.append(Memory(shape=unsigned((hi - lo) * width), depth=max(depth, 1),
                                        init=words or [], attrs={"no_rw_check": 1}))
        addr_shape = range(max(depth, 1))
        self.write = SimpleNamespace(addr=Signal(addr_shape, name=f"{name}_waddr"),
                                     data=Signal(elements * width, name=f"{name}_wdata"),
                                     en=Signal(elements, name=f"{name}_wen"))
        self.reads = [SimpleNamespace(addr=Signal(addr_shape, name=f"{name}_raddr{i}")) for i in range(read_ports)]
        self._next = {}  # read port -> the address of the next cycle (read_next)
        self._next_waddr = None  # the write address of the next cycle (write_next)
        # block RAM outputs are slow (about 6 ns clock-to-out on ECP5 without the RAM's own
        # output register): every read lands in a register before any logic
        self.rdata = [Signal(elements * width, name=f"{name}_rdata{i}") for i in range(read_ports)]

    def read_next(self, port: int, value):
        """Read port ``port`` gets ``value`` one cycle later as its address (as ``reads[port].addr``
        would from a register of ``value``), in one register copy per part."""
        self._next[port] = Value.cast(value)

    def write_next(self, value):
        """The write port gets ``value`` one cycle later as its address (instead of
        ``write.addr``), in one register copy per part."""
        self._next_waddr = Value.cast(value)

    def elaborate_into(self, m, name: str, platform=None):
        """Add the memories to module ``m`` (submodules ``name``, ``name_1``, ...) with the read-data
        registers; call it after every :meth:`read_next` and :meth:`write_next`."""
        w, pe = self.width, self.part_elements
        copies = {port: replicated_register(m, platform, value, self.parts, name=f"{name}_raddr{port}_")
                  for port, value in self._next.items()}
        waddr = ([self.write.addr] * self.parts if self._next_waddr is None else
                 replicated_register(m, platform, self._next_waddr, self.parts, name=f"{name}_waddr_"))
        data = [[] for _ in self.reads]
        for p, mem in enumerate(self.memories):
            m.submodules[name if p == 0 else f"{name}_{p}"] = mem
            lo, hi = p * pe, min(self.elements, (p + 1) * pe)
            wp = mem.write_port(granularity=w)
            m.d.comb += [wp.addr.eq(waddr[p]), wp.data.eq(self.write.data[lo * w: hi * w]),
                         wp.en.eq(self.write.en[lo:hi])]
            for i, rd in enumerate(self.reads):
                rp = mem.read_port()
                m.d.comb += rp.addr.eq(copies[i][p] if i in copies else rd.addr)
                data[i].append(rp.data)
        m.d.sync += [r.eq(Cat(*d)) for r, d in zip(self.rdata, data, strict=True)]

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
