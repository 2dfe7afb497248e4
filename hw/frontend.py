"""The packet front end both engines share (``docs/protocol.md``, :mod:`metafab.reference.protocol`).

:class:`PacketFrontend` parses request packets from a stream of 32-bit
words, checks magic, opcode, length and the "weights loaded" rule, hands
the payload words to the engine core one per cycle, starts the core, and
sends exactly one response packet per request. A malformed request is
drained up to its ``last`` word and answered with an error status; the
front end then waits for the next header, so the stream never hangs.

The core bus (:class:`CoreBusSignature`, members as seen from the front
end; a core has the flipped signature, and the two are joined with
:func:`amaranth.lib.wiring.connect`):

``wr_valid, wr_op, wr_index, wr_data`` (out)
    one payload word per cycle, its opcode and index in the packet; the
    core must take it in that cycle.
``abort`` (out)
    pulse: a request whose payload was (partly) delivered turned out
    malformed; the core drops what it received.
``start, start_op`` (out)
    pulse: a complete, well-formed request; the core runs it.
``done, done_status`` (in)
    pulse from the core: finished, with a :class:`~metafab.reference.protocol.Status`.
``rd_index`` (out), ``rd_data`` (in)
    the front end reads the response payload word by word (combinationally).
``last_cycles`` (in)
    the core's cycle count of its last run, for the STATUS response; the
    front end sends it as it is while the answer is on the stream, so it
    may change only when a run finishes (never while a STATUS is answered:
    the front end answers STATUS only when no request is running).

Pipelined requests (an opcode whose :class:`OpSpec` has ``pipelined=True``;
at most one such opcode): the front end does not wait for the core to
finish one before it takes the next, so the core can work on one request
while the next one streams in. The bus then has three more members
(``CoreBusSignature(pipelined=True)``):

``accept`` (in)
    the core can take the payload (and the start) of a new pipelined
    request; payload words wait (``i.ready`` low) while it is low.
``presult_valid, presult_status`` (in)
    the oldest started pipelined request has its result ready, with this
    status (a level, held until acknowledged); its payload is read through
    ``rd_index`` / ``rd_data`` like any response (one word ahead of the one
    on the stream; ``rd_index`` may run one past the last word).
``presult_ack`` (out)
    pulse: that response has been sent; the core drops the result.

Responses keep the order of the requests: a request that is not the
pipelined opcode (STATUS, LOAD, a malformed packet) waits until every
started pipelined request has been answered; a malformed pipelined request
is answered after them too. Without a pipelined opcode the bus has no such
members.

:class:`PacketEngine` is a whole engine: a front end and a core behind the
word streams ``i`` and ``o``.
"""

from dataclasses import dataclass
from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, ResetSignal, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from metafab.hw.fixed import reject
from metafab.reference.errors import UserError
from metafab.reference.protocol import MAGIC, PROTOCOL_VERSION, STATUS_FIELDS, Opcode, Status

__all__ = ["WORD_LAYOUT", "OpSpec", "CoreBusSignature", "CoreParts", "PacketFrontend", "PacketEngine",
           "StreamRegister"]

#: Payload of the host streams: one 32-bit word and the end-of-packet flag.
WORD_LAYOUT = data.StructLayout({"data": 32, "last": 1})


@dataclass(frozen=True)
class OpSpec:
    """What the front end knows about one core opcode.

    ``req_len`` payload words in, ``resp_len`` payload words out;
    ``needs_loaded``: refused with NOT_LOADED before a successful LOAD;
    ``loads``: a successful run of it sets the loaded flag (a malformed one
    clears it); ``counts_run``: counted in the ``runs`` counter;
    ``pipelined``: started without waiting for the previous request's
    response (see the module docstring); ``unloads``: any run of it, well
    formed or not, clears the loaded flag (it invalidates what the loading
    opcode loaded: the fewshot engine's LOAD_ENCODER); ``waits``: its
    payload words are delivered only once every pipelined request started
    before it has been answered (``i.ready`` low until then), for a payload
    that overwrites what those requests compute with.
    """

    req_len: int
    resp_len: int
    needs_loaded: bool = False
    loads: bool = False
    counts_run: bool = False
    pipelined: bool = False
    unloads: bool = False
    waits: bool = False


def _pipelined_op(ops: dict):
    """The one pipelined opcode of ``ops``, or None."""
    return next((op for op, spec in ops.items() if spec.pipelined), None)


class CoreBusSignature(wiring.Signature):
    """The bus between :class:`PacketFrontend` and an engine core, from the front end's side.

    Parameters
    ----------
    pipelined : bool
        The core has a pipelined opcode: the bus has ``accept``,
        ``presult_valid``, ``presult_status`` and ``presult_ack`` too (see the
        module docstring).

    Members (from the front end; a core uses ``In(CoreBusSignature(...))``):
    ``wr_valid``, ``wr_op`` (8), ``wr_index`` (16), ``wr_data`` (32),
    ``abort``, ``start``, ``start_op`` (8), ``rd_index`` (16) out;
    ``done``, ``done_status`` (8), ``rd_data`` (32), ``last_cycles`` (32) in.
    """

    def __init__(self, *, pipelined: bool):
        if not isinstance(pipelined, bool):
            raise TypeError(f"pipelined must be a bool, got {pipelined!r}")
        self._pipelined = pipelined
        members = {
            "wr_valid": Out(1),
            "wr_op": Out(8),
            "wr_index": Out(16),
            "wr_data": Out(32),
            "abort": Out(1),
            "start": Out(1),
            "start_op": Out(8),
            "done": In(1),
            "done_status": In(8),
            "rd_index": Out(16),
            "rd_data": In(32),
            "last_cycles": In(32),
        }
        if pipelined:
            members.update({
                "accept": In(1),
                "presult_valid": In(1),
                "presult_status": In(8),
                "presult_ack": Out(1),
            })
        super().__init__(members)

    @classmethod
    def for_ops(cls, ops: dict) -> "CoreBusSignature":
        """The bus of a core with the opcodes ``ops`` (pipelined when one of them is)."""
        return cls(pipelined=_pipelined_op(ops) is not None)

    @property
    def pipelined(self) -> bool:
        return self._pipelined

    def __eq__(self, other):
        return type(other) is CoreBusSignature and other.pipelined == self.pipelined

    def __repr__(self):
        return f"CoreBusSignature(pipelined={self._pipelined})"


class CoreParts(SimpleNamespace):
    """What the parts of one core's elaboration share.

    A core's ``elaborate`` builds its Module in named parts (methods taking
    this record as ``dp``), in data-path order: each part reads the values it
    needs from the record and adds the ones later parts use with
    :meth:`add`. The Module is ``dp.m``, the platform ``dp.platform``.
    """

    def add(self, **values):
        """Make ``values`` (name -> value) available to the later parts."""
        self.__dict__.update(values)


class PacketFrontend(wiring.Component):
    """Request parser and response sender for one engine core (see the module docstring).

    Parameters
    ----------
    ops : dict of int -> OpSpec
        The core's opcodes (``Opcode.LOAD``, ``Opcode.RUN``...). ``Opcode.STATUS``
        is answered by the front end itself.

    Attributes
    ----------
    i : In(stream.Signature(WORD_LAYOUT))
        Request words.
    o : Out(stream.Signature(WORD_LAYOUT))
        Response words.
    core : Out(CoreBusSignature)
        The bus to the engine core.
    """

    def __init__(self, *, ops: dict):
        if not ops or Opcode.STATUS in ops:
            reject(self, UserError(f"ops must list the core's opcodes (not STATUS), got {ops!r}"))
        for op, spec in ops.items():
            if not (0 < spec.req_len + 1 <= 0x10000 and 0 <= spec.resp_len <= 0xFFFF):
                reject(self, UserError(f"opcode {op}: packet lengths {spec} exceed 16 bits"))
        piped = [op for op, spec in ops.items() if spec.pipelined]
        if len(piped) > 1 or any(ops[op].loads or ops[op].unloads or ops[op].waits for op in piped):
            reject(self, UserError(f"at most one opcode may be pipelined, and not a loading one: {ops!r}"))
        self._ops = dict(ops)
        self._piped = piped[0] if piped else None
        super().__init__(
            {
                "i": In(stream.Signature(WORD_LAYOUT)),
                "o": Out(stream.Signature(WORD_LAYOUT)),
                "core": Out(CoreBusSignature.for_ops(ops)),
            }
        )

    @property
    def ops(self) -> dict:
        return dict(self._ops)

    def elaborate(self, platform):
        m = Module()
        ops = self._ops
        piped = self._piped

        op = Signal(8)
        # payload words after the current one, and "the current one is the last" as a register of
        # its own (an index-against-length compare in front of the FSM was a critical path)
        left = Signal(16)
        final = Signal()
        index = Signal(16)
        err = Signal(8)
        loaded = Signal()
        runs = Signal(32)
        errors = Signal(32)
        last_error = Signal(8)
        resp_status = Signal(8)
        resp_len = Signal(16)
        resp_idx = Signal(16)
        delivered = Signal()  # some payload words of this request reached the core
        # op == STATUS, registered (op is stable from the cycle after HEADER; RESPOND_DATA comes
        # at least three cycles later): keeps the compare off the response word's path
        op_is_status = Signal()
        m.d.sync += op_is_status.eq(op == int(Opcode.STATUS))
        # op == the pipelined opcode, loaded with op from the header word: no 8-bit compare in front
        # of the payload handshake (the enables of the index registers)
        op_piped = Signal()
        # the header has the magic and a loading opcode (LOAD): a request that fails clears the loaded flag,
        # whether or not any payload word reached the core (docs/protocol.md, "Errors")
        op_loads = Signal()
        # the header's opcode has OpSpec.waits: its payload waits for the pipelined answers
        op_waits = Signal()
        # pipelined requests started and not yet answered (always 0 without a pipelined opcode)
        outstanding = Signal(8)
        pipe_inc, pipe_dec = Signal(), Signal()
        idle_pipe = Signal()  # no pipelined request is waiting for its response
        if piped is not None:
            # outstanding != 0, as a register of its own: keeps the 8-bit compare off the response paths;
            # the count's next values (+1, -1) and flags come from the register, and the late pulses
            # (the core's accept, the consumer's ready) only select among them: no adder behind them
            pending = Signal()
            up, down = pipe_inc & ~pipe_dec, pipe_dec & ~pipe_inc
            m.d.comb += idle_pipe.eq(~pending)
            m.d.sync += [
                outstanding.eq(Mux(up, outstanding + 1, Mux(down, outstanding - 1, outstanding))),
                pending.eq(Mux(up, 1, Mux(down, outstanding[1:].any(), outstanding.any()))),
            ]
        else:
            m.d.comb += idle_pipe.eq(1)

        word = self.i.payload.data
        last = self.i.payload.last
        h_magic = word[24:32]
        h_op = word[16:24]
        h_len = word[0:16]

        # the main FSM answers with core data (rd_data) only for non-pipelined opcodes with a payload
        reads_core = any(spec.resp_len > 0 and not spec.pipelined for spec in ops.values())

        # the STATUS payload, in protocol order
        status_words = {
            "last_cycles": self.core.last_cycles,
            "runs": runs,
            "errors": errors,
            "last_error": last_error,
            "loaded": loaded,
            "version": PROTOCOL_VERSION,
        }
        assert tuple(status_words) == STATUS_FIELDS

        # a read-only view of the state registers for the formal harness (hw/frontend_proof.py); no logic
        view = SimpleNamespace(op=op, left=left, final=final, index=index, err=err, loaded=loaded,
                               resp_status=resp_status, resp_len=resp_len, resp_idx=resp_idx, delivered=delivered,
                               op_is_status=op_is_status, op_piped=op_piped, op_loads=op_loads,
                               outstanding=outstanding, idle_pipe=idle_pipe)

        m.d.comb += [
            self.core.wr_op.eq(op),
            self.core.wr_index.eq(index),
            self.core.wr_data.eq(word),
            self.core.start_op.eq(op),
            self.core.rd_index.eq(resp_idx),
        ]

        def fail(code, *, drain: bool):
            m.d.sync += err.eq(code)
            if drain:
                m.next = "DRAIN"
            else:
                m.next = "ERROR"

        with m.FSM() as view.fsm:
            with m.State("HEADER"):
                # a request other than the pipelined opcode waits until every pipelined one is answered
                take_header = Signal()
                if piped is not None:
                    m.d.comb += take_header.eq(idle_pipe | ((h_magic == MAGIC) & (h_op == int(piped))))
                else:
                    m.d.comb += take_header.eq(1)
                m.d.comb += self.i.ready.eq(take_header)
                # loaded on every HEADER cycle (the FSM leaves HEADER only with a header taken, so
                # they hold that header's fields): no header decode in front of their enables
                m.d.sync += [op.eq(h_op), left.eq(h_len - 1), final.eq(h_len == 1), index.eq(0),
                             delivered.eq(0)]
                if piped is not None:
                    m.d.sync += op_piped.eq(h_op == int(piped))
                waiting = [int(code) for code, spec in ops.items() if spec.waits]
                if waiting:
                    m.d.sync += op_waits.eq(Cat(*(h_op == code for code in waiting)).any())
                loading = [int(code) for code, spec in ops.items() if spec.loads or spec.unloads]
                if loading:
                    m.d.sync += op_loads.eq((h_magic == MAGIC) & Cat(*(h_op == code for code in loading)).any())
                with m.If(self.i.valid & take_header):
                    known = Signal()
                    exp_len = Signal(16)
                    needs_loaded = Signal()
                    with m.Switch(h_op):
                        for code, spec in ops.items():
                            with m.Case(int(code)):
                                m.d.comb += [known.eq(1), exp_len.eq(spec.req_len),
                                             needs_loaded.eq(spec.needs_loaded)]
                        with m.Case(int(Opcode.STATUS)):
                            m.d.comb += [known.eq(1), exp_len.eq(0)]
                    with m.If(h_magic != MAGIC):
                        fail(Status.BAD_MAGIC, drain=True)
                        with m.If(last):
                            m.next = "ERROR"
                    with m.Elif(~known):
                        fail(Status.UNKNOWN_OPCODE, drain=True)
                        with m.If(last):
                            m.next = "ERROR"
                    with m.Elif(h_len != exp_len):
                        fail(Status.BAD_LENGTH, drain=True)
                        with m.If(last):
                            m.next = "ERROR"
                    with m.Elif((h_len == 0) & ~last):
                        fail(Status.BAD_LENGTH, drain=True)
                    with m.Elif((h_len != 0) & last):
                        fail(Status.BAD_LENGTH, drain=False)
                    with m.Elif(needs_loaded & ~loaded):
                        fail(Status.NOT_LOADED, drain=True)
                        with m.If(last):
                            m.next = "ERROR"
                    with m.Elif(h_len == 0):
                        m.next = "EXEC"
                    with m.Else():
                        m.next = "PAYLOAD"

            with m.State("PAYLOAD"):
                # payload of a pipelined request flows only while the core can take it
                take_word = Signal()
                if piped is not None and any(spec.waits for spec in ops.values()):
                    m.d.comb += take_word.eq(Mux(op_piped, self.core.accept, ~op_waits | idle_pipe))
                elif piped is not None:
                    m.d.comb += take_word.eq(~op_piped | self.core.accept)
                else:
                    m.d.comb += take_word.eq(1)
                m.d.comb += self.i.ready.eq(take_word)
                with m.If(self.i.valid & take_word):
                    with m.If(final & ~last):
                        # one word too many: this one is not delivered
                        m.d.comb += self.core.abort.eq(delivered)
                        fail(Status.BAD_LENGTH, drain=True)
                    with m.Elif(~final & last):
                        m.d.comb += self.core.abort.eq(1)
                        fail(Status.BAD_LENGTH, drain=False)
                    with m.Else():
                        m.d.comb += self.core.wr_valid.eq(1)
                        m.d.sync += [index.eq(index + 1), left.eq(left - 1), final.eq(left == 1),
                                     delivered.eq(1)]
                        with m.If(final):
                            m.next = "EXEC"

            with m.State("EXEC"):
                with m.If(op == int(Opcode.STATUS)):
                    m.d.sync += [resp_status.eq(Status.OK), resp_len.eq(len(STATUS_FIELDS)),
                                 resp_idx.eq(0)]
                    m.next = "RESPOND"
                if piped is not None:
                    with m.Elif(op_piped):
                        # started, answered later by the pipelined sender; take the next header now
                        with m.If(self.core.accept):
                            m.d.comb += [self.core.start.eq(1), pipe_inc.eq(1)]
                            m.next = "HEADER"
                with m.Else():
                    m.d.comb += self.core.start.eq(1)
                    m.next = "WAIT"

            with m.State("WAIT"):
                with m.If(self.core.done):
                    ok = self.core.done_status == Status.OK
                    m.d.sync += [resp_status.eq(self.core.done_status), resp_idx.eq(0)]
                    with m.Switch(op):
                        for code, spec in ops.items():
                            with m.Case(int(code)):
                                m.d.sync += resp_len.eq(Mux(ok, spec.resp_len, 0))
                                if spec.loads:
                                    m.d.sync += loaded.eq(ok)
                                if spec.unloads:
                                    m.d.sync += loaded.eq(0)
                                if spec.counts_run:
                                    with m.If(ok):
                                        m.d.sync += runs.eq(runs + 1)
                    with m.If(~ok):
                        m.d.sync += [errors.eq(errors + 1), last_error.eq(self.core.done_status)]
                    m.next = "RESPOND"

            with m.State("DRAIN"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid & last):
                    m.next = "ERROR"

            with m.State("ERROR"):
                # a malformed request: count it, forget the loaded state if it was a LOAD, answer with its
                # status (after the answers of the pipelined requests started before it)
                with m.If(idle_pipe):
                    m.d.sync += [errors.eq(errors + 1), last_error.eq(err), resp_status.eq(err),
                                 resp_len.eq(0), resp_idx.eq(0)]
                    with m.If(op_loads):
                        m.d.sync += loaded.eq(0)
                    m.next = "RESPOND"

            with m.State("RESPOND"):
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.data.eq((MAGIC << 24) | (resp_status << 16) | resp_len),
                    self.o.payload.last.eq(resp_len == 0),
                ]
                with m.If(self.o.ready):
                    with m.If(resp_len == 0):
                        m.next = "HEADER"
                    with m.Else():
                        m.next = "RESPOND_DATA"

            with m.State("RESPOND_DATA"):
                value = Signal(32)
                with m.If(op_is_status):
                    with m.Switch(resp_idx):
                        for k, v in enumerate(status_words.values()):
                            with m.Case(k):
                                m.d.comb += value.eq(v)
                if reads_core:  # else no answer of this FSM carries core data: no path from rd_data
                    with m.Else():
                        m.d.comb += value.eq(self.core.rd_data)
                final = resp_idx == resp_len - 1
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.data.eq(value),
                    self.o.payload.last.eq(final),
                ]
                with m.If(self.o.ready):
                    m.d.sync += resp_idx.eq(resp_idx + 1)
                    with m.If(final):
                        m.next = "HEADER"

        if piped is not None:
            self._pipelined_sender(m, ops[piped], idle_pipe, pipe_dec, runs, errors, last_error, view)
        self._state = view
        return m

    @property
    def state(self) -> SimpleNamespace:
        """The state registers of the last elaboration (read them, never drive them), for the formal harness.

        ``fsm`` (and ``pipe_fsm`` with a pipelined opcode: ``.state`` and
        ``.encoding``), ``op``, ``left``, ``final``, ``index``, ``err``,
        ``loaded``, ``resp_status``, ``resp_len``, ``resp_idx``, ``delivered``,
        ``op_is_status``, ``op_piped``, ``op_loads``, ``outstanding``,
        ``idle_pipe``; the pipelined sender's ``pipe_idx``, ``pipe_idx1``,
        ``pipe_word``. AttributeError before the front end is elaborated.
        """
        return self._state

    def _pipelined_sender(self, m, spec: OpSpec, idle_pipe, pipe_dec, runs, errors, last_error, view):
        """Send the responses of pipelined requests, oldest first, as the core finishes them.

        Each payload word is fetched into a register the cycle before it is
        offered (``rd_index`` runs one word ahead), so the core's result
        multiplexer is not on the output's path.
        """
        idx = Signal(16)  # the word being offered
        idx1 = Signal(16)  # idx + 1, the word being fetched (a register: no adder before the core's mux)
        word = Signal(32)  # its value
        ok = self.core.presult_status == Status.OK
        length = Signal(16)
        m.d.comb += length.eq(Mux(ok, spec.resp_len, 0))

        def finished():
            m.d.comb += [self.core.presult_ack.eq(1), pipe_dec.eq(1)]
            with m.If(ok):
                if spec.counts_run:
                    m.d.sync += runs.eq(runs + 1)
            with m.Else():
                m.d.sync += [errors.eq(errors + 1), last_error.eq(self.core.presult_status)]

        view.pipe_idx, view.pipe_idx1, view.pipe_word = idx, idx1, word
        with m.FSM(name="pipe") as view.pipe_fsm:
            with m.State("HEAD"):
                # outstanding != 0 here: the main FSM is not answering anything (ordering rule)
                with m.If(self.core.presult_valid & ~idle_pipe):
                    m.d.comb += [
                        self.core.rd_index.eq(0),
                        self.o.valid.eq(1),
                        self.o.payload.data.eq((MAGIC << 24) | (self.core.presult_status << 16) | length),
                        self.o.payload.last.eq(length == 0),
                    ]
                    with m.If(self.o.ready):
                        m.d.sync += [idx.eq(0), idx1.eq(1), word.eq(self.core.rd_data)]
                        with m.If(length == 0):
                            finished()
                        with m.Else():
                            m.next = "DATA"
            with m.State("DATA"):
                final = idx == length - 1
                m.d.comb += [
                    self.core.rd_index.eq(idx1),
                    self.o.valid.eq(1),
                    self.o.payload.data.eq(word),
                    self.o.payload.last.eq(final),
                ]
                with m.If(self.o.ready):
                    m.d.sync += [idx.eq(idx1), idx1.eq(idx1 + 1), word.eq(self.core.rd_data)]
                    with m.If(final):
                        finished()
                        m.next = "HEAD"


class StreamRegister(wiring.Component):
    """One registered stage on a word stream: ``o``'s valid and payload come straight from registers."""

    def __init__(self):
        sig = stream.Signature(WORD_LAYOUT)
        super().__init__({"i": In(sig), "o": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        full = Signal()
        data = Signal.like(self.o.payload)
        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(data), self.i.ready.eq(~full | self.o.ready)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [data.eq(self.i.payload), full.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += full.eq(0)
        return m


class PacketEngine(wiring.Component):
    """An engine behind the packet protocol: :class:`PacketFrontend` + a core, ports ``i`` and ``o``.

    Parameters
    ----------
    core : wiring.Component
        The compute core; its ``bus`` member is ``In(CoreBusSignature.for_ops(ops))``.
    ops : dict of int -> OpSpec
        The core's opcodes (see :class:`PacketFrontend`).
    out_register : bool
        Send the response words through a :class:`StreamRegister` (one more
        cycle on every response): the front end's word selection is then not
        on the consumer's path.

    Attributes
    ----------
    i : In(stream.Signature(WORD_LAYOUT))
        Request words (32-bit data + ``last``).
    o : Out(stream.Signature(WORD_LAYOUT))
        Response words.

    Raises
    ------
    TypeError
        ``core`` is not a component with a core bus matching ``ops``.
    UserError
        ``ops`` is not a valid opcode table (see :class:`PacketFrontend`).
    """

    #: The front end's class (the formal harness's mutation tests put a deliberately wrong one here).
    frontend_class = PacketFrontend

    def __init__(self, *, core, ops: dict, out_register: bool = False):
        def fail(exc):
            if isinstance(core, wiring.Component):
                core._MustUse__silence = True  # never elaborated: no "created but never used" warning
            reject(self, exc)

        if not isinstance(core, wiring.Component) or "bus" not in core.signature.members:
            fail(TypeError(f"core must be a wiring.Component with a 'bus' member, got {core!r}"))
        try:
            front = self.frontend_class(ops=ops)
        except UserError as exc:
            fail(exc)
        bus, need = core.signature.members["bus"], In(CoreBusSignature.for_ops(ops))
        if bus != need:
            front._MustUse__silence = True
            fail(TypeError(f"the core's bus is {bus!r}; ops {ops!r} need {need!r}"))
        self._core = core
        self._front = front
        self._ops = dict(ops)
        self._out_register = bool(out_register)
        super().__init__({"i": In(stream.Signature(WORD_LAYOUT)), "o": Out(stream.Signature(WORD_LAYOUT))})

    @property
    def front(self) -> PacketFrontend:
        """The front end (its :attr:`PacketFrontend.state` after elaboration, for the formal harness)."""
        return self._front

    @property
    def core(self) -> wiring.Component:
        return self._core

    @property
    def ops(self) -> dict:
        return dict(self._ops)

    @property
    def out_register(self) -> bool:
        return self._out_register

    def elaborate(self, platform):
        m = Module()
        m.submodules.front = front = self._front
        m.submodules.core = core = self._core
        out = front.o
        if self._out_register:
            m.submodules.out_reg = out_reg = StreamRegister()
            wiring.connect(m, front.o, out_reg.i)
            out = out_reg.o
        # no transfer on either port while reset is held (AXI-Stream: valid low during reset), from its
        # first cycle on, not only once the registers have taken their reset values
        run = ~ResetSignal()
        m.d.comb += [
            front.i.valid.eq(self.i.valid & run),
            front.i.payload.eq(self.i.payload),
            self.i.ready.eq(front.i.ready & run),
            self.o.valid.eq(out.valid & run),
            self.o.payload.eq(out.payload),
            out.ready.eq(self.o.ready & run),
        ]
        wiring.connect(m, front.core, core.bus)
        return m
