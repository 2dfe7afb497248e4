"""The formal harness of the packet front end (``docs/formal.md``; run by ``metafab prove``).

:class:`FrontendProof` puts a :class:`~metafab.hw.frontend.PacketEngine`
(the shared :class:`~metafab.hw.frontend.PacketFrontend` behind its reset
gating) in front of an :class:`AbstractCore`, takes the host streams and
every choice of the core as free inputs, and states the protocol of
``docs/protocol.md`` as Amaranth formal properties:

- **assumptions** on what the front end does not control: the host keeps a
  request word valid and unchanged until it is taken (AXI-Stream), and the
  core obeys its bus (by construction of :class:`AbstractCore`);
- **assertions** on what it does: the response stream's transfer rules, the
  reset rule, one well-formed response packet per request, in request order,
  with the status of the error precedence rules, the documented length, the
  loaded flag of the protocol (modelled here from the requests and answers
  seen, compared with the STATUS answer's ``loaded`` word and with the
  ``NOT_LOADED`` answers it implies), the core's result words in order, and
  the core bus rules the front end must keep;
- **helper invariants** that tie the front end's state registers
  (:attr:`PacketFrontend.state`) to the harness's model, so that
  k-induction closes (they are assertions too: proven, not assumed);
- **covers**: an answer with each status.

The opcode tables are small on purpose (:data:`PLAIN_OPS`,
:data:`PIPELINED_OPS`): the front end's logic does not depend on the sizes
beyond the length compares, and short packets keep the induction depth low.
"""

from amaranth.hdl import Assert, Assume, Cat, Cover, Elaboratable, Fragment, Module, Mux, ResetSignal, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from metafab.hw.frontend import WORD_LAYOUT, CoreBusSignature, OpSpec, PacketEngine, PacketFrontend
from metafab.reference.protocol import MAGIC, PROTOCOL_VERSION, STATUS_FIELDS, Opcode, Status

__all__ = ["PLAIN_OPS", "PIPELINED_OPS", "AbstractCore", "FrontendProof", "MUTANTS"]

#: A core like the MAML engine's: LOAD 3 words, RUN 2 words answered with 2.
PLAIN_OPS = {
    Opcode.LOAD: OpSpec(req_len=3, resp_len=0, loads=True),
    Opcode.RUN: OpSpec(req_len=2, resp_len=2, needs_loaded=True, counts_run=True),
}

#: A core like the similarity engine's: the RUN is pipelined.
PIPELINED_OPS = {
    Opcode.LOAD: OpSpec(req_len=3, resp_len=0, loads=True),
    Opcode.RUN: OpSpec(req_len=2, resp_len=2, needs_loaded=True, counts_run=True, pipelined=True),
}

#: The expected status "whatever the core answered" (OK or BAD_VALUE) in the harness's queue.
CORE_DECIDES = 7


class AbstractCore(wiring.Component):
    """A core that does nothing but obey its bus, every choice left to the solver.

    A non-pipelined request is done any number of cycles after its start
    (``go``), with OK or BAD_VALUE (``bad``); a pipelined one (up to
    ``capacity`` at once) is accepted when ``free`` and the core has room, and
    its result becomes ready, oldest first, when ``finish``. A result's words
    are ``tag ^ rd_index``, ``tag`` drawn when the result is made, so the
    harness can check each word's place in the answer.

    Parameters
    ----------
    ops : dict of int -> OpSpec
        The opcode table (its bus is ``CoreBusSignature.for_ops(ops)``).
    capacity : int
        Pipelined requests the core holds at once (1 to 3).
    """

    def __init__(self, *, ops: dict, capacity: int = 2):
        if not isinstance(capacity, int) or not 1 <= capacity <= 3:
            raise ValueError(f"capacity must be 1 to 3, got {capacity!r}")
        self._piped = next((op for op, spec in ops.items() if spec.pipelined), None)
        self._capacity = capacity
        members = {"bus": In(CoreBusSignature.for_ops(ops)), "go": In(1), "bad": In(1), "tag": In(32),
                   "cycles": In(32)}
        if self._piped is not None:
            members.update({"free": In(1), "finish": In(1)})
        super().__init__(members)
        # the state, for the harness's checks
        self.busy = Signal()  # a non-pipelined request started and not done
        self.last_cycles = Signal(32)  # changes only when a result is made: a STATUS answer reads it
        self.plain_status = Signal(8)  # the status of the last non-pipelined result
        self.plain_tag = Signal(32)
        self.started = Signal(2)  # pipelined requests started and not acknowledged
        self.finished = Signal(2)  # of these, the oldest ones with a result ready
        self.head_set = Signal()  # the oldest result's status and tag are drawn
        self.head_bad = Signal()
        self.head_tag = Signal(32)

    @property
    def capacity(self) -> int:
        return self._capacity

    def head_status(self):
        """The status of the oldest pipelined result (a value, as the bus shows it)."""
        return Mux(Mux(self.head_set, self.head_bad, self.bad), Status.BAD_VALUE, Status.OK)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        piped = self._piped
        plain_start = bus.start & (bus.start_op != int(piped)) if piped is not None else bus.start
        done = self.busy & self.go
        m.d.comb += [
            bus.done.eq(done),
            bus.done_status.eq(Mux(self.bad, Status.BAD_VALUE, Status.OK)),
            bus.last_cycles.eq(self.last_cycles),
        ]
        with m.If(plain_start):
            m.d.sync += self.busy.eq(1)
        with m.If(done):
            m.d.sync += [self.busy.eq(0), self.plain_status.eq(bus.done_status), self.plain_tag.eq(self.tag),
                         self.last_cycles.eq(self.cycles)]
        if piped is None:
            m.d.comb += bus.rd_data.eq(self.plain_tag ^ bus.rd_index)
            return m

        head_tag = Mux(self.head_set, self.head_tag, self.tag)
        m.d.comb += [
            bus.rd_data.eq(Mux(self.started != 0, head_tag, self.plain_tag) ^ bus.rd_index),
            bus.accept.eq(self.free & (self.started < self._capacity)),
            bus.presult_valid.eq(self.finished != 0),
            bus.presult_status.eq(self.head_status()),
        ]
        start = bus.start & (bus.start_op == int(piped))
        finish = self.finish & (self.finished < self.started)
        ack = bus.presult_ack
        with m.If(finish):
            m.d.sync += self.last_cycles.eq(self.cycles)
        m.d.sync += [
            self.started.eq(self.started + start - ack),
            self.finished.eq(self.finished + finish - ack),
        ]
        with m.If(ack):
            m.d.sync += self.head_set.eq(0)
        with m.Elif(bus.presult_valid & ~self.head_set):
            m.d.sync += [self.head_set.eq(1), self.head_bad.eq(self.bad), self.head_tag.eq(self.tag)]
        return m


class _LoadedOnlyWhenDelivered(PacketFrontend):
    """Mutant: a failed LOAD clears the loaded flag only when a payload word reached the core (an old bug)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        s = self.state
        with m.If((s.fsm.state == s.fsm.encoding["ERROR"]) & ~s.delivered):
            m.d.sync += s.loaded.eq(s.loaded)
        return m


class _ValidDropsEarly(PacketFrontend):
    """Mutant: a response payload word's ``valid`` drops after one cycle without ``ready``."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        waited = Signal()
        m.d.sync += waited.eq(self.o.valid & ~self.o.ready)
        with m.If(waited & (self.state.fsm.state == self.state.fsm.encoding["RESPOND_DATA"])):
            m.d.comb += self.o.valid.eq(0)
        return m


#: Deliberately wrong front ends the proof must reject: name -> PacketFrontend subclass.
MUTANTS = {"loaded-only-when-delivered": _LoadedOnlyWhenDelivered, "valid-drops-early": _ValidDropsEarly}


class FrontendProof(wiring.Component):
    """The formal harness: a PacketEngine with an AbstractCore, and the protocol's properties.

    Parameters
    ----------
    ops : dict of int -> OpSpec
        The opcode table (:data:`PLAIN_OPS` or :data:`PIPELINED_OPS`).
    out_register : bool
        The engine's response register (the similarity engine has it).
    frontend_class : type
        The front end under proof (a :class:`PacketFrontend` subclass; the
        mutation tests use :data:`MUTANTS`).

    Attributes
    ----------
    i, o : the engine's request and response streams (free inputs for the solver).
    go, bad, tag, cycles, free, finish : the abstract core's choices.
    """

    def __init__(self, *, ops: dict, out_register: bool = False, frontend_class: type = PacketFrontend):
        if not (isinstance(frontend_class, type) and issubclass(frontend_class, PacketFrontend)):
            raise TypeError(f"frontend_class must be a PacketFrontend subclass, got {frontend_class!r}")
        self._ops = dict(ops)
        self._piped = next((op for op, spec in ops.items() if spec.pipelined), None)
        self._out_register = bool(out_register)
        self._frontend_class = frontend_class
        members = {"i": In(stream.Signature(WORD_LAYOUT)), "o": Out(stream.Signature(WORD_LAYOUT)),
                   "go": In(1), "bad": In(1), "tag": In(32), "cycles": In(32)}
        if self._piped is not None:
            members.update({"free": In(1), "finish": In(1)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        ops, piped = self._ops, self._piped
        core = AbstractCore(ops=ops)
        engine_class = type("ProvenEngine", (PacketEngine,), {"frontend_class": self._frontend_class})
        engine = engine_class(core=core, ops=ops, out_register=self._out_register)
        # elaborated here, not later as a plain submodule: the properties read the front end's state registers
        m.submodules.engine = _Elaborated(Fragment.get(engine, platform))
        front = engine.front
        s = front.state
        for name in ("go", "bad", "tag", "cycles") + (("free", "finish") if piped is not None else ()):
            m.d.comb += getattr(core, name).eq(getattr(self, name))
        wiring.connect(m, wiring.flipped(self.i), engine.i)
        wiring.connect(m, engine.o, wiring.flipped(self.o))
        rst = ResetSignal()
        i, o, bus = self.i, self.o, core.bus

        def state(name, fsm=s.fsm):
            return fsm.state == fsm.encoding[name]

        def req_len(code):
            """The request length the protocol expects of opcode ``code`` (a value)."""
            v = Signal(16)
            with m.Switch(code):
                for op, spec in ops.items():
                    with m.Case(int(op)):
                        m.d.comb += v.eq(spec.req_len)
            return v

        def resp_len(status, code):
            """The response length the protocol gives status ``status`` to opcode ``code``."""
            v = Signal(16)
            with m.If(status == Status.OK):
                with m.Switch(code):
                    for op, spec in ops.items():
                        with m.Case(int(op)):
                            m.d.comb += v.eq(spec.resp_len)
                    with m.Case(int(Opcode.STATUS)):
                        m.d.comb += v.eq(len(STATUS_FIELDS))
            return v

        # ---- AXI-Stream rules of the host (assumed) and of the response stream (asserted)
        i_wait = Signal()
        i_held = Signal.like(i.payload)
        m.d.sync += [i_wait.eq(i.valid & ~i.ready), i_held.eq(i.payload)]
        with m.If(i_wait & ~rst):
            m.d.comb += Assume(i.valid & (i.payload.as_value() == i_held.as_value()))
        o_wait = Signal()
        o_held = Signal.like(o.payload)
        m.d.sync += [o_wait.eq(o.valid & ~o.ready), o_held.eq(o.payload)]
        with m.If(o_wait & ~rst):
            m.d.comb += Assert(o.valid, "o.valid held until ready")
            m.d.comb += Assert(o.payload.as_value() == o_held.as_value(), "o.payload stable while held")
        with m.If(rst):
            m.d.comb += Assert(~i.ready & ~o.valid, "no transfer while reset is held")

        # ---- the harness's model of the protocol, from the words that move
        take = i.valid & i.ready
        give = o.valid & o.ready
        word, last = i.payload.data, i.payload.last
        h_magic, h_op, h_len = word[24:32], word[16:24], word[0:16]
        loaded = Signal()  # the loaded flag as docs/protocol.md defines it
        # the request being received
        rq_in = Signal()  # after its header, before its last word
        rq_err = Signal(3)  # its error so far (0: none)
        rq_op = Signal(2)  # its opcode if LOAD, RUN or STATUS, else 0
        rq_ml = Signal()  # its header has the magic and the LOAD opcode
        rq_pos = Signal(2)  # payload words taken so far (while rq_err == 0)
        # requests received and not yet answered, oldest first: expected status, opcode, is a LOAD
        depth = 1 if piped is None else core.capacity + 1
        q_status = [Signal(3, name=f"q{k}_status") for k in range(depth)]
        q_op = [Signal(2, name=f"q{k}_op") for k in range(depth)]
        q_ml = [Signal(name=f"q{k}_ml") for k in range(depth)]
        unanswered = Signal(range(depth + 1))
        to_start = Signal()  # a well-formed LOAD/RUN is complete and the core has not been started on it
        # the response being sent
        rs_in = Signal()
        rs_left = Signal(3)
        rs_idx = Signal(3)
        rs_status = Signal()  # it answers a STATUS
        rs_piped = Signal()  # it answers a pipelined request (its words come from the core's oldest result)

        # the request's status as far as its header decides it (rules 1-5), and whether it completes here
        known = Cat(h_op == Opcode.STATUS, *(h_op == int(op) for op in ops)).any()
        h_code = Signal(2)
        m.d.comb += h_code.eq(Mux(known, h_op[:2], 0))
        needs_loaded = Cat(*(h_op == int(op) for op, sp in ops.items() if sp.needs_loaded)).any()
        h_err = Signal(3)
        h_req_len = req_len(h_op)
        with m.If(h_magic != MAGIC):
            m.d.comb += h_err.eq(Status.BAD_MAGIC)
        with m.Elif(~known):
            m.d.comb += h_err.eq(Status.UNKNOWN_OPCODE)
        with m.Elif(h_len != h_req_len):
            m.d.comb += h_err.eq(Status.BAD_LENGTH)
        with m.Elif((h_len == 0) != last):
            m.d.comb += h_err.eq(Status.BAD_LENGTH)
        with m.Elif(needs_loaded & ~loaded):
            m.d.comb += h_err.eq(Status.NOT_LOADED)

        # the payload word being taken (rules 6-7)
        rq_len = req_len(Cat(rq_op, 0))
        good_word = Signal()  # a payload word of a request well-formed so far, in its place
        bad_word = Signal()  # the word that makes the request malformed (early last, or no last on its last word)
        m.d.comb += [
            good_word.eq(rq_in & (rq_err == 0) & (last == (rq_pos == rq_len - 1))),
            bad_word.eq(rq_in & (rq_err == 0) & (last != (rq_pos == rq_len - 1))),
        ]

        # completing a request: push its expected answer
        push = Signal()
        push_status = Signal(3)
        push_op = Signal(2)
        push_ml = Signal()
        with m.If(take):
            with m.If(~rq_in):
                m.d.comb += [push_op.eq(h_code),
                             push_ml.eq((h_magic == MAGIC) & (h_op == Opcode.LOAD))]
                m.d.sync += [rq_err.eq(h_err), rq_op.eq(h_code), rq_pos.eq(0),
                             rq_ml.eq((h_magic == MAGIC) & (h_op == Opcode.LOAD))]
                with m.If(last):
                    m.d.comb += push.eq(1)
                    m.d.comb += push_status.eq(Mux(h_err != 0, h_err, Status.OK))  # STATUS: answered OK
                with m.Else():
                    m.d.sync += rq_in.eq(1)
            with m.Else():
                m.d.comb += [push_op.eq(rq_op), push_ml.eq(rq_ml)]
                with m.If(rq_err != 0):
                    m.d.comb += push_status.eq(rq_err)
                with m.Elif(bad_word):
                    m.d.comb += push_status.eq(Status.BAD_LENGTH)
                    m.d.sync += rq_err.eq(Status.BAD_LENGTH)
                with m.Else():
                    m.d.comb += push_status.eq(CORE_DECIDES)
                    m.d.sync += rq_pos.eq(rq_pos + 1)
                with m.If(last):
                    m.d.comb += push.eq(1)
                    m.d.sync += rq_in.eq(0)
        with m.If(push & (push_status == CORE_DECIDES)):
            m.d.sync += to_start.eq(1)
        with m.If(bus.start):
            m.d.sync += to_start.eq(0)

        # sending a response: check its header against the oldest unanswered request, pop it
        r_word, r_last = o.payload.data, o.payload.last
        r_status, r_len = r_word[16:24], r_word[0:16]
        pop = give & ~rs_in
        head_piped = (q_op[0] == int(piped)) if piped is not None else 0
        core_status = Mux(head_piped, core.head_status(), core.plain_status) if piped is not None \
            else core.plain_status
        expected = Mux(q_status[0] == CORE_DECIDES, core_status, q_status[0])
        r_len_expected = resp_len(r_status, q_op[0])
        s_len_expected = resp_len(s.resp_status, q_op[0])
        with m.If(pop):
            m.d.comb += [
                Assert(unanswered != 0, "a response only after its request's last word"),
                Assert(r_word[24:32] == MAGIC, "response magic 0xA5"),
                Assert(r_status <= Status.BAD_VALUE, "response status among the defined ones"),
                Assert(r_status == expected, "response status as the precedence rules give it"),
                Assert(r_len == r_len_expected, "response length: the opcode's if OK, else 0"),
                Assert(r_last == (r_len == 0), "header has last iff no payload"),
            ]
            with m.If(q_ml[0]):
                m.d.sync += loaded.eq(r_status == Status.OK)
            with m.If(r_len != 0):
                m.d.sync += [rs_in.eq(1), rs_left.eq(r_len), rs_idx.eq(0),
                             rs_status.eq(q_op[0] == Opcode.STATUS), rs_piped.eq(head_piped)]
        with m.If(give & rs_in):
            m.d.comb += Assert(r_last == (rs_left == 1), "last on the response's last word only")
            m.d.sync += [rs_left.eq(rs_left - 1), rs_idx.eq(rs_idx + 1)]
            with m.If(rs_left == 1):
                m.d.sync += rs_in.eq(0)
            with m.If(rs_status):
                with m.If(rs_idx == STATUS_FIELDS.index("loaded")):
                    m.d.comb += Assert(r_word == loaded, "STATUS loaded word is the loaded flag")
                with m.If(rs_idx == STATUS_FIELDS.index("version")):
                    m.d.comb += Assert(r_word == PROTOCOL_VERSION, "STATUS version word")
            with m.Else():
                tag = Mux(rs_piped, core.head_tag, core.plain_tag) if piped is not None else core.plain_tag
                m.d.comb += Assert(r_word == (tag ^ rs_idx), "result words are the core's, in order")

        # the queue: pop the head, push at the tail
        after_pop = Signal(range(depth + 1))
        m.d.comb += after_pop.eq(unanswered - pop)
        for k in range(depth):
            src_status = q_status[k + 1] if k + 1 < depth else 0
            src_op = q_op[k + 1] if k + 1 < depth else 0
            src_ml = q_ml[k + 1] if k + 1 < depth else 0
            with m.If(push & (after_pop == k)):
                m.d.sync += [q_status[k].eq(push_status), q_op[k].eq(push_op), q_ml[k].eq(push_ml)]
            with m.Elif(pop):
                m.d.sync += [q_status[k].eq(src_status), q_op[k].eq(src_op), q_ml[k].eq(src_ml)]
        m.d.sync += unanswered.eq(after_pop + push)
        m.d.comb += Assert(unanswered <= depth, "unanswered requests fit the harness's queue")

        # ---- the core bus rules the front end keeps
        with m.If(bus.wr_valid):
            m.d.comb += [
                Assert(take & good_word, "the core gets exactly the payload words of well-formed requests"),
                Assert(bus.wr_index == rq_pos, "wr_index is the word's place in the payload"),
                Assert(bus.wr_data == word, "wr_data is the word"),
                Assert(bus.wr_op == rq_op, "wr_op is the request's opcode"),
            ]
        with m.If(bus.abort):
            m.d.comb += Assert(take & bad_word, "abort only when a request turns out malformed in its payload")
        with m.If(take & bad_word & (rq_pos != 0)):
            m.d.comb += Assert(bus.abort, "abort when a request with delivered words turns out malformed")
        with m.If(bus.start):
            m.d.comb += Assert(to_start, "start only for a complete well-formed request, once")
            m.d.comb += Assert(bus.start_op == rq_op, "start_op is the request's opcode")
        if piped is not None:
            with m.If(bus.start & (bus.start_op == int(piped))):
                m.d.comb += Assert(bus.accept, "a pipelined start only when the core accepts")
            with m.If(bus.wr_valid & (bus.wr_op == int(piped))):
                m.d.comb += Assert(bus.accept, "a pipelined payload word only when the core accepts")
            with m.If(bus.start & (bus.start_op != int(piped))):
                m.d.comb += Assert(core.started == 0, "a non-pipelined start only with no pipelined one pending")
            with m.If(bus.presult_ack):
                m.d.comb += Assert(bus.presult_valid & give & r_last, "presult_ack as its answer's last word goes")
        with m.If(core.busy):
            m.d.comb += Assert(~bus.start, "no start while the core is busy")

        # ---- covers: an answer with each status
        for status in Status:
            m.d.comb += Cover(pop & (r_status == status), f"answer {status.name}")

        # ---- helper invariants (asserted too): the front end's state registers against the model
        H, P, E, W, D, R, S, SD = (state(n) for n in ("HEADER", "PAYLOAD", "EXEC", "WAIT", "DRAIN", "ERROR",
                                                       "RESPOND", "RESPOND_DATA"))
        main_answer = R | E | W | S  # the main FSM holds a complete request (the queue's youngest)
        tail = 0 if piped is None else unanswered - 1
        t_status = Signal(3)
        t_op = Signal(2)
        t_ml = Signal()
        with m.Switch(tail):
            for k in range(depth):
                with m.Case(k):
                    m.d.comb += [t_status.eq(q_status[k]), t_op.eq(q_op[k]), t_ml.eq(q_ml[k])]
        if piped is None:
            m.d.comb += [
                Assert(unanswered == main_answer, "inv: one request at a time"),
                Assert(rs_in == SD, "inv: response payload"),
                Assert(core.busy == W, "inv: core busy"),
            ]
        else:
            PH, PD = state("HEAD", s.pipe_fsm), state("DATA", s.pipe_fsm)
            waiting = core.started - PD  # started pipelined requests whose answer has not begun
            m.d.comb += [
                Assert(unanswered == waiting + main_answer, "inv: queue = started + the main FSM's"),
                Assert((s.outstanding == core.started) & (s.idle_pipe == (core.started == 0)),
                       "inv: outstanding count"),
                Assert((core.finished <= core.started) & (core.started <= core.capacity), "inv: core counts"),
                Assert(~core.head_set | (core.finished != 0), "inv: head drawn only when ready"),
                Assert(rs_in == (SD | PD), "inv: response payload"),
                Assert(core.busy == W, "inv: core busy"),
                Assert(~(S | SD | W) | (core.started == 0), "inv: main answers only with no pipelined pending"),
                Assert(~(PD & (S | SD)), "inv: one sender at a time"),
                Assert(PH | PD, "inv: pipe state"),
            ]
            with m.If(~H):
                m.d.comb += Assert(s.op_piped == (s.op == int(piped)), "inv: op_piped")
            with m.If((P | E) & ~s.op_piped):
                m.d.comb += Assert(core.started == 0, "inv: a non-pipelined request only with none pending")
            with m.If(S | W):
                m.d.comb += Assert((t_status != CORE_DECIDES) | (t_op != int(piped)),
                                   "inv: the main FSM never answers a well-formed pipelined request")
            for k in range(depth):
                with m.If(k < waiting):
                    m.d.comb += Assert((q_status[k] == CORE_DECIDES) & (q_op[k] == int(piped)),
                                       "inv: started pipelined requests first in the queue")
            rlen = ops[piped].resp_len
            with m.If(PD):
                m.d.comb += [
                    Assert(rs_piped & ~rs_status & (rs_idx == s.pipe_idx) & (s.pipe_idx1 == s.pipe_idx + 1),
                           "inv: pipelined answer position"),
                    Assert((s.pipe_idx < rlen) & (rs_left == rlen - s.pipe_idx), "inv: pipelined answer length"),
                    Assert(core.head_set & ~core.head_bad & (core.finished != 0), "inv: pipelined result held"),
                    Assert(s.pipe_word == (core.head_tag ^ s.pipe_idx), "inv: pipelined word fetched"),
                ]
        m.d.comb += [
            Assert((core.plain_status == Status.OK) | (core.plain_status == Status.BAD_VALUE), "inv: core status"),
            Assert(rq_in == (P | D), "inv: inside a request"),
            Assert(to_start == (E & (s.op != Opcode.STATUS)), "inv: start pending"),
        ]
        with m.If(~S):
            m.d.comb += Assert(s.loaded == loaded, "inv: loaded flag")
        for k in range(depth):
            with m.If(k < unanswered):
                st, op_, ml = q_status[k], q_op[k], q_ml[k]
                m.d.comb += [
                    Assert((st <= Status.NOT_LOADED) | (st == CORE_DECIDES), "inv: queued status"),
                    Assert((st != Status.OK) | (op_ == Opcode.STATUS), "inv: queued OK is a STATUS"),
                    Assert((st != CORE_DECIDES) | (op_ == Opcode.LOAD) | (op_ == Opcode.RUN), "inv: queued run"),
                    Assert((st != Status.NOT_LOADED) | (op_ == Opcode.RUN), "inv: queued NOT_LOADED"),
                    Assert(~ml | (op_ == Opcode.LOAD), "inv: queued LOAD"),
                ]
        with m.If(P):
            m.d.comb += [
                Assert((rq_err == 0) & (s.op == rq_op) & ((rq_op == Opcode.LOAD) | (rq_op == Opcode.RUN)),
                       "inv: payload of a LOAD/RUN"),
                Assert((s.index == rq_pos) & (rq_pos < rq_len) & (s.left == rq_len - 1 - rq_pos), "inv: position"),
                Assert((s.final == (s.left == 0)) & (s.delivered == (rq_pos != 0)), "inv: final, delivered"),
                Assert((s.op_loads == rq_ml) & (rq_ml == (rq_op == Opcode.LOAD)), "inv: op_loads in payload"),
            ]
        with m.If(D):
            m.d.comb += Assert((rq_err == s.err) & (s.err >= Status.BAD_MAGIC) & (s.err <= Status.NOT_LOADED)
                               & (s.op_loads == rq_ml) & (~rq_ml | (rq_op == Opcode.LOAD))
                               & ((rq_err != Status.NOT_LOADED) | (rq_op == Opcode.RUN)), "inv: drain")
        with m.If(R):
            m.d.comb += Assert((t_status == s.err) & (s.err >= Status.BAD_MAGIC) & (s.err <= Status.NOT_LOADED)
                               & (t_ml == s.op_loads), "inv: error answer pending")
        with m.If(E | W):
            m.d.comb += Assert((t_op == s.op) & (s.op == rq_op) & (t_ml == (s.op == Opcode.LOAD)), "inv: exec op")
            m.d.comb += Assert(Mux(s.op == Opcode.STATUS, t_status == Status.OK,
                                   (t_status == CORE_DECIDES) & ((s.op == Opcode.LOAD) | (s.op == Opcode.RUN))),
                               "inv: exec status")
        with m.If(W):
            m.d.comb += Assert(~s.op_is_status & (s.op != Opcode.STATUS), "inv: wait op")
        with m.If(S):
            m.d.comb += [
                Assert((s.resp_idx == 0) & (s.resp_status == expected), "inv: answer status"),
                Assert(s.resp_len == s_len_expected, "inv: answer length"),
                Assert(s.op_is_status == (s.op == Opcode.STATUS), "inv: op_is_status"),
                Assert(s.loaded == Mux(q_ml[0], s.resp_status == Status.OK, loaded), "inv: loaded at answer"),
            ]
            with m.If((q_status[0] == CORE_DECIDES) | (q_status[0] == Status.OK)):
                m.d.comb += Assert(s.op == q_op[0], "inv: answer op")
        with m.If(SD):
            m.d.comb += [
                Assert((rs_idx == s.resp_idx) & (rs_left == s.resp_len - s.resp_idx) & (s.resp_idx < s.resp_len),
                       "inv: answer position"),
                Assert((rs_status == s.op_is_status) & (s.op_is_status == (s.op == Opcode.STATUS)),
                       "inv: answer kind"),
                Assert(Mux(rs_status, s.resp_len == len(STATUS_FIELDS),
                           (s.op == Opcode.RUN) & (s.resp_len == ops[Opcode.RUN].resp_len) & ~rs_piped
                           & (piped is None)),
                       "inv: answer payload length"),
            ]
        return m

class _Elaborated(Elaboratable):
    """An already elaborated fragment as a submodule."""

    def __init__(self, fragment):
        self._fragment = fragment

    def elaborate(self, platform):
        return self._fragment
