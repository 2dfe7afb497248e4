"""The packet protocol of both engines: encode requests, decode responses (see docs/protocol.md).

One module used by the cocotb benches, the tests and the host driver, so
there is one definition of every field. A packet is a sequence of 32-bit
words on a valid/ready stream; the final word of each packet carries
``last``. Word 0 is the header::

    bits 31..24  magic  0xA5
    bits 23..16  opcode (requests) or status (responses)
    bits 15..0   length: number of payload words after the header

Every request gets exactly one response packet. Values travel as two's
complement codes of their fixed-point format, sign-extended to 32 bits, except
the similarity engine's query codes, which travel two to a word when they fit
16 bits (:func:`pack_codes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from metafab.reference.errors import UserError

__all__ = [
    "PROTOCOL_VERSION",
    "MAGIC",
    "WORD_BITS",
    "MAX_LENGTH",
    "Opcode",
    "Status",
    "Packet",
    "header",
    "encode_request",
    "encode_response",
    "decode_response",
    "split_packets",
    "to_words",
    "from_words",
    "pack_codes",
    "unpack_codes",
    "STATUS_FIELDS",
    "status_payload",
    "words_to_bytes",
    "ByteParser",
]

PROTOCOL_VERSION = 2
MAGIC = 0xA5
WORD_BITS = 32
MAX_LENGTH = 0xFFFF
_MASK = (1 << WORD_BITS) - 1


class Opcode(IntEnum):
    """Request opcodes."""

    LOAD = 0x01  # maml: initial weights; match: support set and labels
    RUN = 0x02  # maml: one task (support pairs, queries); match: one query
    STATUS = 0x03  # counters and the last error
    READ_WEIGHTS = 0x04  # maml, maml-cls: the weights the last RUN adapted (master format, LOAD order)
    LOAD_ENCODER = 0x05  # fewshot: the encoder's weights (then LOAD the support set again)


class Status(IntEnum):
    """Response status codes."""

    OK = 0x00
    BAD_MAGIC = 0x01
    UNKNOWN_OPCODE = 0x02
    BAD_LENGTH = 0x03
    NOT_LOADED = 0x04
    BAD_VALUE = 0x05


#: Payload of a STATUS response, in order (each one 32-bit word).
STATUS_FIELDS = ("last_cycles", "runs", "errors", "last_error", "loaded", "version")


@dataclass(frozen=True)
class Packet:
    """A decoded packet: ``code`` is the opcode (request) or the status (response)."""

    code: int
    payload: tuple[int, ...]

    @property
    def status(self) -> Status:
        return Status(self.code)


def header(code: int, length: int) -> int:
    """The header word for an opcode/status and a payload length."""
    if not 0 <= code <= 0xFF:
        raise UserError(f"opcode/status {code!r} must fit 8 bits")
    if not 0 <= length <= MAX_LENGTH:
        raise UserError(f"packet length {length} must be in 0..{MAX_LENGTH}")
    return (MAGIC << 24) | (code << 16) | length


def to_words(codes) -> list[int]:
    """Signed integer codes as 32-bit words (two's complement)."""
    out = []
    for c in np.asarray(codes, dtype=np.int64).reshape(-1).tolist():
        if not -(1 << 31) <= c < (1 << 31):
            raise UserError(f"code {c} does not fit a {WORD_BITS}-bit word")
        out.append(c & _MASK)
    return out


def from_words(words, signed: bool = True) -> np.ndarray:
    """32-bit words back to integer codes."""
    w = np.asarray(list(words), dtype=np.int64) & _MASK
    if signed:
        w = np.where(w >= (1 << 31), w - (1 << 32), w)
    return w.astype(np.int64)


def pack_codes(codes, per_word: int) -> list[int]:
    """Codes packed ``per_word`` to a 32-bit word.

    ``per_word`` 1: :func:`to_words`. 2: 16-bit two's-complement fields, code
    ``2w`` in bits 15..0 of word ``w`` and code ``2w + 1`` in bits 31..16; an odd
    count leaves the last word's upper field 0.
    """
    if per_word == 1:
        return to_words(codes)
    if per_word != 2:
        raise ValueError(f"per_word must be 1 or 2, got {per_word!r}")
    fw = WORD_BITS // per_word
    c = np.asarray(codes, dtype=np.int64).reshape(-1)
    if c.size and (c.min() < -(1 << (fw - 1)) or c.max() >= (1 << (fw - 1))):
        bad = int(c[(c < -(1 << (fw - 1))) | (c >= (1 << (fw - 1)))][0])
        raise UserError(f"code {bad} does not fit a {fw}-bit field")
    if c.size % 2:
        c = np.append(c, 0)
    f = c & ((1 << fw) - 1)
    return [int(lo | (hi << fw)) for lo, hi in zip(f[0::2].tolist(), f[1::2].tolist(), strict=True)]


def unpack_codes(words, per_word: int, count: int) -> np.ndarray:
    """The first ``count`` signed codes of words packed by :func:`pack_codes`."""
    if per_word == 1:
        return from_words(words)[:count]
    if per_word != 2:
        raise ValueError(f"per_word must be 1 or 2, got {per_word!r}")
    fw = WORD_BITS // per_word
    w = np.asarray(list(words), dtype=np.int64) & _MASK
    f = np.stack([w & ((1 << fw) - 1), w >> fw], axis=1).reshape(-1)
    return np.where(f >= (1 << (fw - 1)), f - (1 << fw), f)[:count].astype(np.int64)


def encode_request(opcode: int, payload=()) -> list[tuple[int, bool]]:
    """A request as ``[(word, last), ...]`` beats: header, then the payload words."""
    words = [int(w) & _MASK for w in payload]
    beats = [header(int(opcode), len(words))] + words
    return [(w, i == len(beats) - 1) for i, w in enumerate(beats)]


def encode_response(status: int, payload=()) -> list[tuple[int, bool]]:
    """A response as ``[(word, last), ...]`` beats (what the engine sends): the same framing as a request,
    with the status in the header's code field."""
    return encode_request(status, payload)


def status_payload(*, last_cycles: int, runs: int, errors: int, last_error: int, loaded: bool) -> tuple[int, ...]:
    """The payload words of a STATUS response (:data:`STATUS_FIELDS` in order; ``version`` is this
    module's :data:`PROTOCOL_VERSION`)."""
    fields = {"last_cycles": last_cycles, "runs": runs, "errors": errors, "last_error": last_error,
              "loaded": int(bool(loaded)), "version": PROTOCOL_VERSION}
    return tuple(int(fields[name]) & _MASK for name in STATUS_FIELDS)


def split_packets(beats) -> list[list[int]]:
    """Group ``(word, last)`` beats into packets (lists of words)."""
    packets, cur = [], []
    for word, last in beats:
        cur.append(int(word))
        if last:
            packets.append(cur)
            cur = []
    if cur:
        raise UserError(f"stream ended inside a packet ({len(cur)} words without last)")
    return packets


def decode_response(words) -> Packet:
    """Check and decode one response packet (a list of words, header first)."""
    if not words:
        raise UserError("empty response packet")
    h = int(words[0])
    if h >> 24 != MAGIC:
        raise UserError(f"response header {h:#010x} lacks the magic byte {MAGIC:#04x}")
    code, length = (h >> 16) & 0xFF, h & 0xFFFF
    if length != len(words) - 1:
        raise UserError(f"response header says {length} payload words, got {len(words) - 1}")
    try:
        Status(code)
    except ValueError:
        raise UserError(f"unknown response status {code:#04x}") from None
    return Packet(code, tuple(int(w) for w in words[1:]))


def words_to_bytes(words) -> bytes:
    """Protocol words as a byte stream for a UART link: each word least significant byte first."""
    return b"".join(int(w & _MASK).to_bytes(4, "little") for w in words)


class ByteParser:
    """Reassembles response packets from the bytes a UART link receives.

    :meth:`feed` takes any number of bytes and returns the packets (lists
    of words, header first) that became complete; the header's length field
    says where a packet ends.
    """

    def __init__(self):
        self._buf = bytearray()
        self._words: list[int] = []

    def feed(self, data: bytes) -> list[list[int]]:
        self._buf += data
        done = []
        while len(self._buf) >= 4:
            self._words.append(int.from_bytes(self._buf[:4], "little"))
            del self._buf[:4]
            if len(self._words) - 1 == self._words[0] & 0xFFFF:
                done.append(self._words)
                self._words = []
        return done

    @property
    def pending(self) -> int:
        """Bytes received that are not part of a complete packet yet."""
        return len(self._buf) + 4 * len(self._words)
