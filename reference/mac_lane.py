"""Transaction-level model of the MAC lane (:class:`metafab.hw.fixed.MacLane`)."""

from __future__ import annotations

import numpy as np

from metafab.reference import fixed as fx
from metafab.reference.config import MacLaneConfig

__all__ = ["random_packets", "dot_products"]


def random_packets(cfg: MacLaneConfig, rng: np.random.Generator, n_packets: int, max_len: int = 9):
    """``n_packets`` random operand packets ``(a_codes, b_codes)`` of 1..``max_len`` beats.

    A quarter of the packets use only the formats' extreme codes, so that
    saturation and wrap-around are exercised, not just typical values.
    """
    packets = []
    for k in range(n_packets):
        n = int(rng.integers(1, max_len + 1))
        if k % 4 == 3:
            a = rng.choice([cfg.a_fmt.min_code, cfg.a_fmt.max_code], size=n)
            b = rng.choice([cfg.b_fmt.min_code, cfg.b_fmt.max_code], size=n)
        else:
            a = rng.integers(cfg.a_fmt.min_code, cfg.a_fmt.max_code + 1, size=n)
            b = rng.integers(cfg.b_fmt.min_code, cfg.b_fmt.max_code + 1, size=n)
        packets.append((a.astype(np.int64), b.astype(np.int64)))
    return packets


def dot_products(cfg: MacLaneConfig, packets) -> list[int]:
    """The lane's outputs: per packet, the exact dot product in ``acc_fmt`` resized to ``out_fmt``.

    Stochastic rounding draws one xorshift32 step per output, seeded with ``cfg.seed``.
    """
    lfsr = fx.Xorshift32(cfg.seed)
    out = []
    for a, b in packets:
        acc = fx.dot(a, cfg.a_fmt, b, cfg.b_fmt, cfg.acc_fmt)
        out.append(int(fx.resize(acc, cfg.acc_fmt, cfg.out_fmt, cfg.rounding, cfg.overflow, lfsr)))
    return out
