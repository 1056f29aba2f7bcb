"""compute.kalman against a direct numpy implementation of the same equations, and convergence to the true hedge
ratio of a synthetic cointegrated pair."""

from __future__ import annotations

import numpy as np
import pytest

from compute.kalman import kalman_filter, kalman_init, kalman_step


def numpy_kalman(x: np.ndarray, y: np.ndarray, delta: float, r: float, theta: np.ndarray, c: np.ndarray):
    """The reference: the module docstring's equations with numpy arrays, one observation at a time. Products are
    written elementwise (BLAS dot products fuse multiply-adds, which a compiled kernel need not do; see
    ``numpy_kalman_matmul``)."""
    vw = delta / (1.0 - delta) * np.eye(2)
    out = np.empty((len(x), 4))
    for t in range(len(x)):
        f = np.array([x[t], 1.0])
        p = c + vw
        e = y[t] - (f * theta).sum()
        fp = (f[:, None] * p).sum(axis=0)  # F P
        q = (fp * f).sum() + r  # F P F' + r
        k = (p * f).sum(axis=1) / q  # P F' / Q
        theta = theta + k * e
        c = p - k[:, None] * fp[None, :]
        out[t] = theta[0], theta[1], e, q
    return out, theta, c


def numpy_kalman_matmul(x: np.ndarray, y: np.ndarray, delta: float, r: float, theta: np.ndarray, c: np.ndarray):
    """The same equations in matrix notation (numpy's matmul / BLAS)."""
    vw = delta / (1.0 - delta) * np.eye(2)
    out = np.empty((len(x), 4))
    for t in range(len(x)):
        f = np.array([x[t], 1.0])
        p = c + vw
        e = y[t] - f @ theta
        q = f @ p @ f + r
        k = p @ f / q
        theta = theta + k * e
        c = p - np.outer(k, f @ p)
        out[t] = theta[0], theta[1], e, q
    return out, theta, c


def synthetic_pair(seed: int, n: int, beta: float = 1.2, alpha: float = 0.3, noise: float = 0.002):
    """ln B a random walk around ln 3000; ln A = alpha + beta ln B + an AR(1) spread."""
    rng = np.random.default_rng(seed)
    x = np.log(3000.0) + np.cumsum(rng.standard_normal(n) * 0.003)
    s = np.zeros(n)
    e = rng.standard_normal(n) * noise
    for t in range(1, n):
        s[t] = 0.95 * s[t - 1] + e[t]
    return x, alpha + beta * x + s


@pytest.mark.parametrize(("seed", "delta", "r"), [(1, 1e-4, 1e-3), (2, 1e-6, 1e-5), (3, 1e-7, 1e-6)])
def test_equals_numpy_reference(seed: int, delta: float, r: float) -> None:
    x, y = synthetic_pair(seed, 20_000)
    ref, theta_ref, c_ref = numpy_kalman(x, y, delta, r, np.zeros(2), np.eye(2))
    # incremental: one kalman_step per observation, arrays updated in place
    state, cov = kalman_init()
    steps = np.array([kalman_step(state, cov, float(x[t]), float(y[t]), delta, r) for t in range(len(x))])
    np.testing.assert_allclose(steps[:, 0], ref[:, 0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(steps[:, 1], ref[:, 1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(state, theta_ref, rtol=1e-12)
    np.testing.assert_allclose(cov, c_ref, rtol=1e-12, atol=1e-20)
    # batch, in two halves continuing the same state
    s2, c2 = kalman_init()
    h = len(x) // 2
    first = kalman_filter(x[:h], y[:h], delta, r, s2, c2)
    second = kalman_filter(x[h:], y[h:], delta, r, s2, c2)
    got = np.column_stack([np.concatenate(p) for p in zip(first, second, strict=True)])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(got[:, :2], steps)  # the same compiled arithmetic either way
    # matrix notation: the same up to fused multiply-add rounding, amplified where beta and alpha are barely
    # separable (ln B varies little)
    mm = numpy_kalman_matmul(x, y, delta, r, np.zeros(2), np.eye(2))[0]
    np.testing.assert_allclose(got[:, [0, 1, 3]], mm[:, [0, 1, 3]], rtol=1e-8)
    np.testing.assert_allclose(got[:, 2], mm[:, 2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [4, 5])
def test_converges_to_true_beta(seed: int) -> None:
    x, y = synthetic_pair(seed, 30_000, beta=1.2, alpha=0.3)
    beta, _, e, q = kalman_filter(x, y, delta=1e-7, r=1e-5)
    tail = slice(-5000, None)
    assert abs(np.mean(beta[tail]) - 1.2) < 0.02
    assert np.max(np.abs(beta[tail] - 1.2)) < 0.1
    # the forecast errors are the spread, standardized by their own variance
    z = e[tail] / np.sqrt(q[tail])
    assert 0.3 < np.std(z) < 3.0


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="delta"):
        kalman_filter(np.ones(3), np.ones(3), delta=1.0)
    with pytest.raises(ValueError, match="same length"):
        kalman_filter(np.ones(3), np.ones(4))
