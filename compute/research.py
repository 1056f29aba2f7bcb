"""Pair research over a window of prices (offline, numpy, vectorized; not the hot path).

``ols`` (hedge ratio), ``adf`` (augmented Dickey-Fuller with lag selection and MacKinnon p-values),
``engle_granger`` (cointegration: ADF on the OLS residuals), ``hurst`` (Hurst exponent), ``half_life`` (of mean
reversion) and ``scan_pairs`` (every pair of a set of aligned price series ranked by the cointegration p-value).

``adf`` and ``engle_granger`` follow statsmodels' ``adfuller`` / ``coint`` (0.14/0.15) step for step: the same
default maximum lag (Schwert's 12 (n/100)^(1/4)), the same sample for lag selection (trimmed at the maximum lag),
the same information criteria, the same final regression on the re-trimmed sample, and the same MacKinnon
response surfaces, so they agree with it to rounding. The nested lag-selection regressions come from the R factor
of one QR decomposition (``_r_factor``) of the largest design matrix with the regressand appended (the residual
sum of squares of the first k columns is the full model's plus the squared tail of Q'y), not one least-squares
fit per lag.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

# MacKinnon, J.G. (1994), "Approximate Asymptotic Distribution Functions for Unit-Root and Cointegration Tests",
# Journal of Business & Economic Statistics 12(2), 167-176; tables updated in MacKinnon (2010), "Critical Values
# for Cointegration Tests", Queen's Economics Department Working Paper 1227. Coefficients as statsmodels ships
# them (statsmodels/tsa/adfvalues.py, ``mackinnonp``): p = Phi(c0 + c1 t + c2 t^2 [+ c3 t^3]), with the
# "small p" polynomial for t <= tau_star and the "large p" one above it; p = 0 below tau_min, 1 above tau_max.
# Index N - 1, where N is the number of I(1) series: 1 for the ADF test, 2 for Engle-Granger on a pair.
_SMALL_SCALE = np.array([1.0, 1.0, 1e-2])
_LARGE_SCALE = np.array([1.0, 1e-1, 1e-1, 1e-2])
_TAU_STAR = {"n": [-1.04, -1.53], "c": [-1.61, -2.62], "ct": [-2.89, -3.19]}
_TAU_MIN = {"n": [-19.04, -19.62], "c": [-18.83, -18.86], "ct": [-16.18, -21.15]}
_TAU_MAX = {"n": [math.inf, 1.51], "c": [2.74, 0.92], "ct": [0.7, 0.63]}
_TAU_SMALLP = {
    "n": np.array([[0.6344, 1.2378, 3.2496], [1.9129, 1.3857, 3.5322]]) * _SMALL_SCALE,
    "c": np.array([[2.1659, 1.4412, 3.8269], [2.92, 1.5012, 3.9796]]) * _SMALL_SCALE,
    "ct": np.array([[3.2512, 1.6047, 4.9588], [3.6646, 1.5419, 3.6448]]) * _SMALL_SCALE,
}
_TAU_LARGEP = {
    "n": np.array([[0.4797, 9.3557, -0.6999, 3.3066], [1.5578, 8.558, -2.083, -3.3549]]) * _LARGE_SCALE,
    "c": np.array([[1.7339, 9.3202, -1.2745, -1.0368], [2.1945, 6.4695, -2.9198, -4.2377]]) * _LARGE_SCALE,
    "ct": np.array([[2.5261, 6.1654, -3.7956, -6.0285], [2.85, 5.272, -3.6622, -5.1695]]) * _LARGE_SCALE,
}
_NTREND = {"n": 0, "c": 1, "ct": 2}
_SQRT_EPS = math.sqrt(np.finfo(np.float64).eps)


def _norm_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def mackinnonp(stat: float, regression: str = "c", n_series: int = 1) -> float:
    """MacKinnon's approximate asymptotic p-value of a (augmented) Dickey-Fuller / Engle-Granger statistic.

    ``regression``: "n" (none), "c" (constant) or "ct" (constant and trend); ``n_series``: 1 (ADF) or 2 (pair)."""
    if regression not in _TAU_STAR:
        raise ValueError(f"regression must be one of {', '.join(_TAU_STAR)}, got {regression!r}")
    if n_series not in (1, 2):
        raise ValueError(f"n_series must be 1 or 2, got {n_series}")
    k = n_series - 1
    if stat > _TAU_MAX[regression][k]:
        return 1.0
    if stat < _TAU_MIN[regression][k]:
        return 0.0
    coef = _TAU_SMALLP[regression][k] if stat <= _TAU_STAR[regression][k] else _TAU_LARGEP[regression][k]
    return _norm_cdf(float(np.polyval(coef[::-1], stat)))


def _vector(a: Any, name: str) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def ols(y: Any, x: Any) -> tuple[float, float, np.ndarray]:
    """Least squares ``y = alpha + beta x + e``: returns (alpha, beta, residuals). Two-pass (means, then
    centred cross products); ``var(x) == 0`` gives beta 0 and alpha the mean of y."""
    y, x = _vector(y, "y"), _vector(x, "x")
    if len(y) != len(x) or len(y) < 2:
        raise ValueError(f"y and x need the same length >= 2, got {len(y)} and {len(x)}")
    mx, my = x.mean(), y.mean()
    dx = x - mx
    sxx = float(dx @ dx)
    beta = float(dx @ (y - my)) / sxx if sxx > 0 else 0.0
    alpha = float(my - beta * mx)
    return alpha, beta, y - alpha - beta * x


def _r_factor(a: np.ndarray) -> np.ndarray:
    """Upper-triangular R of a QR decomposition of the tall matrix ``a`` (up to row signs), by CholeskyQR2 on
    norm-scaled columns: two Gram products and two small Cholesky factorizations, as accurate as Householder QR
    for the well-conditioned designs used here. LAPACK's threaded QR of tall matrices crawls when the cores are
    busy (pinned spinning stages, other jobs); Gram products and k x k factorizations do not. Falls back to
    ``np.linalg.qr`` when a Gram matrix is not numerically positive definite."""
    scale = np.sqrt(np.einsum("ij,ij->j", a, a))
    scale[scale == 0] = 1.0
    b = a / scale
    try:
        r1 = np.linalg.cholesky(b.T @ b).T
        q1 = b @ np.linalg.inv(r1)
        r2 = np.linalg.cholesky(q1.T @ q1).T
    except np.linalg.LinAlgError:
        return np.linalg.qr(a, mode="r")
    return (r2 @ r1) * scale


def _adf_design(x: np.ndarray, d: np.ndarray, lags: int, regression: str) -> tuple[np.ndarray, np.ndarray]:
    """Regressand Δx_t and regressors [trend terms..., x_{t-1}, Δx_{t-1}, ..., Δx_{t-lags}] for t = lags+1..n-1
    (statsmodels' ``lagmat(..., trim="both", original="in")`` with the level in place of the first column)."""
    n = len(x)
    nobs = n - 1 - lags
    cols = []
    if regression in ("c", "ct"):
        cols.append(np.ones(nobs))
    if regression == "ct":
        cols.append(np.arange(1.0, nobs + 1.0))
    cols.append(x[lags : n - 1])
    cols += [d[lags - j : n - 1 - j] for j in range(1, lags + 1)]
    return d[lags:], np.column_stack(cols)


def adf(series: Any, maxlag: int | None = None, autolag: str | None = "AIC",
        regression: str = "c") -> tuple[float, float, int, int]:
    """Augmented Dickey-Fuller unit-root test: (stat, pvalue, usedlag, nobs), as statsmodels' ``adfuller``.

    ``maxlag`` default 12 (n/100)^(1/4) capped at n/2 - ntrend - 1; ``autolag`` "AIC", "BIC", "t-stat" (choose the
    number of lagged differences on a common sample) or None (use ``maxlag``); ``regression`` "c" (constant),
    "ct" (constant and trend) or "n" (none). The p-value is MacKinnon's (1994/2010) approximation."""
    x = _vector(series, "series")
    if regression not in _NTREND:
        raise ValueError(f"regression must be one of {', '.join(_NTREND)}, got {regression!r}")
    if len(x) == 0 or x.max() == x.min():
        raise ValueError("series is empty or constant")
    n, ntrend = len(x), _NTREND[regression]
    if maxlag is None:
        maxlag = min(n // 2 - ntrend - 1, math.ceil(12.0 * (n / 100.0) ** 0.25))
        if maxlag < 0:
            raise ValueError(f"series too short ({n}) for the regression {regression!r}")
    elif not 0 <= maxlag <= n // 2 - ntrend - 1:
        raise ValueError(f"maxlag must be in [0, n/2 - 1 - ntrend] = [0, {n // 2 - ntrend - 1}], got {maxlag}")
    d = np.diff(x)
    usedlag = maxlag
    if autolag is not None:
        method = autolag.lower()
        if method not in ("aic", "bic", "t-stat"):
            raise ValueError(f"autolag must be 'AIC', 'BIC', 't-stat' or None, got {autolag!r}")
        usedlag = _select_lag(*_adf_design(x, d, maxlag, regression), ntrend + 1, maxlag, method)
    y, xx = _adf_design(x, d, usedlag, regression)
    nobs, k = xx.shape
    r_aug = _r_factor(np.column_stack([xx, y]))  # R of [X y]: R_X, Q'y and sqrt(ssr) in one
    r, qty = r_aug[:k, :k], r_aug[:k, k]
    coef = np.linalg.solve(r, qty)
    sigma2 = float(r_aug[k, k]) ** 2 / (nobs - k)
    rinv = np.linalg.inv(r)
    se_level = math.sqrt(sigma2 * float(rinv[ntrend] @ rinv[ntrend]))
    stat = float(coef[ntrend]) / se_level
    return stat, mackinnonp(stat, regression, 1), usedlag, nobs


def _select_lag(y: np.ndarray, xx: np.ndarray, k0: int, maxlag: int, method: str) -> int:
    """Number of lagged differences (0..maxlag) chosen by ``method`` among the nested regressions on the first
    k0 + lag columns of ``xx``, all on the same sample, like statsmodels' ``_autolag``."""
    nobs, kmax = xx.shape
    r_aug = _r_factor(np.column_stack([xx, y]))
    z = r_aug[:kmax, kmax]  # Q'y
    ssr_full = float(r_aug[kmax, kmax]) ** 2
    tail = np.concatenate([np.cumsum((z * z)[::-1])[::-1], [0.0]])  # tail[k] = sum_{j >= k} z_j^2
    ks = np.arange(k0, k0 + maxlag + 1)
    ssr = ssr_full + tail[ks]
    if method == "t-stat":
        # t of the last column of the nested regression on k columns: z_{k-1} sign(R_kk) / sigma_k
        tabs = np.abs(z[ks - 1]) / np.sqrt(ssr / (nobs - ks))
        for lag in range(maxlag, -1, -1):
            if tabs[lag] >= 1.6448536269514722:  # norm.ppf(0.95), as statsmodels
                return lag
        return 0
    llf = -nobs / 2.0 * (math.log(2.0 * math.pi) + np.log(ssr / nobs) + 1.0)
    ic = -2.0 * llf + (2.0 if method == "aic" else math.log(nobs)) * ks
    return int(np.argmin(ic))  # first minimum: the shortest lag on ties, as statsmodels' min((ic, lag))


def engle_granger(y: Any, x: Any, maxlag: int | None = None,
                  autolag: str | None = "AIC") -> tuple[float, float, float]:
    """Engle-Granger two-step cointegration test of y on x (as statsmodels' ``coint`` with trend "c"): OLS
    ``y = alpha + beta x``, then ADF without deterministic terms on the residuals; the p-value is MacKinnon's for
    two variables with a constant. Returns (stat, pvalue, beta). Perfectly collinear series give (-inf, 0, beta)."""
    y, x = _vector(y, "y"), _vector(x, "x")
    _, beta, resid = ols(y, x)
    dy = y - y.mean()
    sst = float(dy @ dy)
    rsquared = 1.0 - float(resid @ resid) / sst if sst > 0 else 0.0
    if rsquared >= 1.0 - 100.0 * _SQRT_EPS:
        return -math.inf, 0.0, beta
    stat = adf(resid, maxlag=maxlag, autolag=autolag, regression="n")[0]
    return stat, mackinnonp(stat, "c", 2), beta


def hurst(series: Any, max_lag: int = 100, min_lag: int = 2) -> float:
    """Hurst exponent from the scaling of lagged differences: the slope of log std(x_{t+k} - x_t) on log k for
    k in [min_lag, max_lag] (capped at n/2). About 0.5 for a random walk, below 0.5 for a mean-reverting series,
    above for a trending one."""
    x = _vector(series, "series")
    hi = min(max_lag, len(x) // 2)
    if hi < min_lag + 1 or min_lag < 1:
        raise ValueError(f"series too short ({len(x)}) for lags {min_lag}..{max_lag}")
    lags = np.arange(min_lag, hi + 1)
    sd = np.array([np.std(x[k:] - x[:-k]) for k in lags])
    if np.any(sd <= 0):
        return math.nan
    return float(np.polyfit(np.log(lags), np.log(sd), 1)[0])


def half_life(spread: Any) -> float:
    """Half-life of mean reversion in samples: OLS ``Δs_t = a + λ s_{t-1}``, half-life = -ln 2 / λ; infinite when
    the spread does not revert (λ >= 0)."""
    s = _vector(spread, "spread")
    if len(s) < 3:
        raise ValueError(f"spread too short ({len(s)})")
    lam = ols(np.diff(s), s[:-1])[1]
    return -math.log(2.0) / lam if lam < 0 else math.inf


def _pair_row(a: str, b: str, la: np.ndarray, lb: np.ndarray, n: int) -> dict[str, Any]:
    stat, pvalue, beta = engle_granger(la, lb)
    alpha, _, spread = ols(la, lb)
    return {"a": a, "b": b, "beta": beta, "alpha": alpha, "eg_stat": stat, "pvalue": pvalue,
            "hurst": hurst(spread), "half_life": half_life(spread), "n": n}


def scan_pairs(closes: dict[str, np.ndarray], min_obs: int = 100, both_directions: bool = True) -> list[dict[str, Any]]:
    """Rank every pair of aligned price series (same length, one value per minute; NaN = no price that minute) by
    the Engle-Granger p-value of log prices, best first (ties: the lower statistic).

    Per pair only the minutes where both prices are finite and positive count. A row: ``a``, ``b`` (ln a =
    alpha + beta ln b + spread), ``beta``, ``alpha``, ``eg_stat``, ``pvalue``, ``hurst`` and ``half_life`` (in
    samples) of the spread, ``n`` (minutes used). With ``both_directions`` each pair is also tested as b on a and
    the direction with the lower statistic is kept. Pairs with fewer than ``min_obs`` common minutes get NaN
    measures and rank last."""
    names = list(closes)
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in closes.items()}
    lens = {len(v) for v in arrays.values()}
    if len(lens) > 1:
        raise ValueError(f"series must be aligned (same length), got lengths {sorted(lens)}")
    rows = []
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = {k: np.where(np.isfinite(v) & (v > 0), np.log(np.where(v > 0, v, 1.0)), np.nan)
                for k, v in arrays.items()}
    for a, b in itertools.combinations(names, 2):
        ok = np.isfinite(logs[a]) & np.isfinite(logs[b])
        la, lb, n = logs[a][ok], logs[b][ok], int(ok.sum())
        if n < min_obs or la.max() == la.min() or lb.max() == lb.min():
            rows.append({"a": a, "b": b, "beta": math.nan, "alpha": math.nan, "eg_stat": math.nan,
                         "pvalue": math.nan, "hurst": math.nan, "half_life": math.nan, "n": n})
            continue
        row = _pair_row(a, b, la, lb, n)
        if both_directions:
            rev = _pair_row(b, a, lb, la, n)
            if rev["eg_stat"] < row["eg_stat"]:
                row = rev
        rows.append(row)

    def key(r: dict[str, Any]) -> tuple[float, float]:
        p, s = r["pvalue"], r["eg_stat"]
        return (math.inf if math.isnan(p) else p, math.inf if math.isnan(s) else s)

    rows.sort(key=key)
    return rows
