"""Adam (Kingma and Ba, 2015): the outer optimiser of meta-training, in float64.

``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g**2``, and
``theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)`` with the bias-corrected
moments ``m_hat = m / (1 - b1**t)``, ``v_hat = v / (1 - b2**t)``.
"""

from __future__ import annotations

import numpy as np

from metafab.reference.arrays import as_rate

__all__ = ["Adam"]

Params = list[tuple[np.ndarray, np.ndarray]]


class Adam:
    """Adam state for a list of ``(W, b)`` parameters.

    Parameters
    ----------
    lr : float
        Step size (> 0).
    beta1, beta2 : float
        Decay rates of the first and second moment estimates.
    eps : float
        Added to ``sqrt(v_hat)`` in the denominator.

    Attributes
    ----------
    t : int
        Number of steps taken.
    """

    def __init__(self, *, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self._lr = as_rate("lr", lr, positive=True)
        self._beta1 = as_rate("beta1", beta1)
        self._beta2 = as_rate("beta2", beta2)
        self._eps = as_rate("eps", eps)
        self._m: list[np.ndarray] | None = None
        self._v: list[np.ndarray] | None = None
        self.t = 0

    @property
    def lr(self) -> float:
        return self._lr

    def step(self, params: Params, grads: Params) -> Params:
        """Return the parameters after one Adam update with gradients ``grads``."""
        flat_p = [a for pair in params for a in pair]
        flat_g = [a for pair in grads for a in pair]
        if self._m is None:
            self._m = [np.zeros_like(p) for p in flat_p]
            self._v = [np.zeros_like(p) for p in flat_p]
        self.t += 1
        b1, b2 = self._beta1, self._beta2
        scale = self._lr * np.sqrt(1.0 - b2**self.t) / (1.0 - b1**self.t)
        eps_hat = self._eps * np.sqrt(1.0 - b2**self.t)
        out = []
        for p, g, m, v in zip(flat_p, flat_g, self._m, self._v, strict=True):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * g * g
            out.append(p - scale * m / (np.sqrt(v) + eps_hat))
        return list(zip(out[0::2], out[1::2], strict=True))
