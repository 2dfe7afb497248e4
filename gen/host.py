"""The host driver: talk to an engine on a board over its USB-UART (pyserial), with the one protocol module.

:class:`Host` turns requests into bytes (:func:`request_bytes`) and bytes
back into decoded responses; the transport is anything with ``write(bytes)``
and ``read(n) -> bytes`` (a ``serial.Serial``, or a test double). The same
byte encoding drives the board top in simulation (``sim/benches/board.py``); the payload words of
each engine come from :mod:`metafab.reference.payloads`.
"""

from __future__ import annotations

import time

import numpy as np

from metafab.reference.errors import UserError
from metafab.reference.protocol import (
    STATUS_FIELDS,
    ByteParser,
    Opcode,
    Packet,
    Status,
    decode_response,
    encode_request,
    from_words,
    words_to_bytes,
)

__all__ = ["request_bytes", "decode_bytes", "Host", "open_serial"]


def request_bytes(opcode: int, payload=()) -> bytes:
    """The bytes a host writes for one request."""
    return words_to_bytes(w for w, _ in encode_request(opcode, payload))


def decode_bytes(data: bytes) -> Packet:
    """One response packet from its bytes."""
    packets = ByteParser().feed(data)
    if len(packets) != 1:
        raise UserError(f"expected one response packet in {len(data)} bytes, got {len(packets)}")
    return decode_response(packets[0])


class Host:
    """Request/response over a byte transport (one request outstanding at a time)."""

    def __init__(self, transport, *, timeout: float = 10.0):
        self.transport = transport
        self.timeout = timeout
        #: wall-clock seconds of each RUN, request written to response read (the link and the engine)
        self.run_seconds: list[float] = []

    def request(self, opcode: int, payload=()) -> Packet:
        self.transport.write(request_bytes(opcode, payload))
        parser = ByteParser()
        deadline = time.monotonic() + self.timeout
        while True:
            data = self.transport.read(max(1, min(4096, 4 + 4 * 0xFFFF)))
            if data:
                packets = parser.feed(data)
                if packets:
                    return decode_response(packets[0])
            elif time.monotonic() > deadline:
                raise UserError(
                    f"no complete response within {self.timeout:g} s ({parser.pending} bytes received); "
                    f"is the board configured with this engine, and the baud rate right?"
                )

    def checked(self, opcode: int, payload=()) -> Packet:
        resp = self.request(opcode, payload)
        if resp.status != Status.OK:
            raise UserError(f"the engine answered {resp.status.name} to {Opcode(opcode).name}")
        return resp

    def status(self) -> dict:
        return dict(zip(STATUS_FIELDS, self.checked(Opcode.STATUS).payload, strict=True))

    def load(self, words) -> None:
        self.checked(Opcode.LOAD, words)

    def run(self, words) -> np.ndarray:
        t0 = time.perf_counter()
        resp = self.checked(Opcode.RUN, words)
        self.run_seconds.append(time.perf_counter() - t0)
        return from_words(resp.payload)

    def read_weights(self) -> np.ndarray:
        """The MAML engines' READ_WEIGHTS: the master-format codes of the weights the last RUN adapted
        (the loaded ones before any RUN), in LOAD order."""
        return from_words(self.checked(Opcode.READ_WEIGHTS).payload)


def open_serial(port: str, baud: int, timeout: float = 0.2):
    """A pyserial port (UserError naming the port when it cannot be opened)."""
    try:
        import serial
    except ImportError:
        raise UserError("pyserial is not installed: pip install 'pyserial>=3.5'") from None
    try:
        return serial.Serial(port, baudrate=baud, timeout=timeout)
    except (serial.SerialException, OSError) as exc:
        raise UserError(f"cannot open serial port {port!r}: {exc}") from None
