"""Kalman-filter hedge ratio: an alternative to rolling OLS for a pair's beta.

Model (the usual dynamic linear regression of a pair, e.g. Chan, "Algorithmic Trading", ch. 3): the state
``theta = [beta, alpha]`` is a random walk, ``theta_t = theta_{t-1} + w_t`` with ``w_t ~ N(0, Vw)``,
``Vw = delta / (1 - delta) * I``; the observation is ``y_t = beta_t x_t + alpha_t + v_t`` with ``v_t ~ N(0, r)``,
where ``y = ln(A)`` and ``x = ln(B)``. One step, with ``F = [x, 1]``:

    P  = C + Vw                     (predicted state covariance)
    e  = y - F theta                (forecast error)
    Q  = F P F' + r                 (its variance)
    K  = P F' / Q                   (gain)
    theta <- theta + K e
    C  <- P - K (F P)

``delta`` sets how fast beta may move (larger: faster, noisier; 1e-4 .. 1e-7 for one-minute log prices) and ``r``
the observation noise variance (about the spread's variance). ``kalman_step`` updates ``state`` (2,) and ``cov``
(2, 2) float64 arrays in place, so a stage keeps them as its state and calls it once per closed minute; ``e`` and
``Q`` give the filter's own z-score, ``e / sqrt(Q)``, which ``kalman_filter`` returns for research.
"""

from __future__ import annotations

import numba
import numpy as np


def kalman_init(beta: float = 0.0, alpha: float = 0.0, p0: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A fresh filter: state [beta, alpha] and covariance ``p0 * I`` (a large p0 = an uninformative start)."""
    return np.array([beta, alpha], dtype=np.float64), np.eye(2, dtype=np.float64) * p0


@numba.njit(cache=True, nogil=True)
def kalman_update(state, cov, x, y, delta, r):
    """One step (see the module docstring); updates ``state`` and ``cov`` in place and returns the forecast error
    ``e`` and its variance ``Q``."""
    w = delta / (1.0 - delta)
    p00 = cov[0, 0] + w
    p01 = cov[0, 1]
    p10 = cov[1, 0]
    p11 = cov[1, 1] + w
    e = y - (x * state[0] + state[1])
    fp0 = x * p00 + p10  # F P
    fp1 = x * p01 + p11
    q = fp0 * x + fp1 + r  # F P F' + r
    k0 = (p00 * x + p01) / q  # P F' / Q
    k1 = (p10 * x + p11) / q
    state[0] += k0 * e
    state[1] += k1 * e
    cov[0, 0] = p00 - k0 * fp0
    cov[0, 1] = p01 - k0 * fp1
    cov[1, 0] = p10 - k1 * fp0
    cov[1, 1] = p11 - k1 * fp1
    return e, q


@numba.njit(cache=True, nogil=True)
def kalman_step(state, cov, x, y, delta, r):
    """One filter step for the observation ``y = ln(A)``, ``x = ln(B)``: updates ``state`` = [beta, alpha] and
    ``cov`` in place; returns (beta, alpha) after the update."""
    kalman_update(state, cov, x, y, delta, r)
    return state[0], state[1]


@numba.njit(cache=True, nogil=True)
def _filter(state, cov, x, y, delta, r, beta, alpha, err, var):
    for t in range(x.shape[0]):
        e, q = kalman_update(state, cov, x[t], y[t], delta, r)
        beta[t] = state[0]
        alpha[t] = state[1]
        err[t] = e
        var[t] = q


def kalman_filter(x: np.ndarray, y: np.ndarray, delta: float = 1e-5, r: float = 1e-3,
                  state: np.ndarray | None = None, cov: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the filter over series ``x = ln(B)``, ``y = ln(A)``: returns arrays (beta, alpha, e, Q) per step (after
    each update; ``e`` and ``Q`` are the forecast error and its variance before it). ``state`` / ``cov`` (updated
    in place) continue an earlier run; default ``kalman_init()``."""
    if not 0.0 < delta < 1.0 or not r > 0.0:
        raise ValueError(f"need 0 < delta < 1 and r > 0, got delta={delta}, r={r}")
    xs = np.ascontiguousarray(x, dtype=np.float64)
    ys = np.ascontiguousarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-d of the same length, got {xs.shape} and {ys.shape}")
    if state is None or cov is None:
        state, cov = kalman_init()
    n = xs.shape[0]
    beta, alpha, err, var = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    _filter(state, cov, xs, ys, float(delta), float(r), beta, alpha, err, var)
    return beta, alpha, err, var
