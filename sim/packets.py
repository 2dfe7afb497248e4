"""A cocotb packet link to an engine's ``i``/``o`` word streams (protocol: docs/protocol.md)."""

from __future__ import annotations

import random

from metafab.reference.protocol import Packet, decode_response, encode_request
from metafab.sim.stream import PayloadCodec, StreamSink, StreamSource

__all__ = ["WORD_FIELDS", "PacketLink"]

#: The word stream payload (``metafab.hw.frontend.WORD_LAYOUT``), LSB first.
WORD_FIELDS = [("data", 0, 32, False), ("last", 32, 1, False)]


class PacketLink:
    """Sends request packets and returns the decoded response packets.

    Idle cycles on the request stream and back-pressure on the response
    stream are random with the given probabilities.
    """

    def __init__(self, dut, clock, *, idle: float = 0.0, backpressure: float = 0.0,
                 rng: random.Random | None = None):
        rng = rng or random.Random(0)
        self.codec = PayloadCodec(WORD_FIELDS)
        self.source = StreamSource(dut, "i", clock, idle=idle, rng=rng)
        self.sink = StreamSink(dut, "o", clock, backpressure=backpressure, rng=rng)

    def send_raw(self, beats):
        """Queue ``(word, last)`` beats as they are (for malformed packets)."""
        self.source.send_nowait([self.codec.pack({"data": w, "last": int(last)}) for w, last in beats])

    async def recv_packet(self, timeout_cycles: int = 1_000_000) -> list[int]:
        """The next response packet's words (header first)."""
        words = []
        while True:
            (beat,) = await self.sink.recv(1, timeout_cycles)
            f = self.codec.unpack(beat)
            words.append(f["data"])
            if f["last"]:
                return words

    async def request(self, opcode: int, payload=(), timeout_cycles: int = 1_000_000) -> Packet:
        """Send one request and return its decoded response."""
        self.send_raw(encode_request(opcode, payload))
        return decode_response(await self.recv_packet(timeout_cycles))
