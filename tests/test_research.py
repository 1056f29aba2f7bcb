"""compute.research against statsmodels (OLS, adfuller, coint, mackinnonp) on the same seeded data, and the
Hurst exponent / half-life on processes with known behaviour."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

sm_stattools = pytest.importorskip("statsmodels.tsa.stattools")
sm_api = pytest.importorskip("statsmodels.api")
from statsmodels.tsa.adfvalues import mackinnonp as sm_mackinnonp  # noqa: E402

from compute.research import adf, engle_granger, half_life, hurst, mackinnonp, ols, scan_pairs  # noqa: E402

_RESULT_OBJECT = "result_object" in inspect.signature(sm_stattools.adfuller).parameters


def sm_adf(x: np.ndarray, **kw) -> tuple:
    if _RESULT_OBJECT:
        kw["result_object"] = False
    return sm_stattools.adfuller(x, **kw)


def sm_coint(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    res = sm_stattools.coint(y, x)
    return (res.coint_t, res.pvalue) if hasattr(res, "coint_t") else (res[0], res[1])


def ar1(rng: np.random.Generator, n: int, phi: float, sd: float = 1.0) -> np.ndarray:
    e = rng.standard_normal(n) * sd
    out = np.empty(n)
    acc = 0.0
    for t in range(n):
        acc = phi * acc + e[t]
        out[t] = acc
    return out


def ou(rng: np.random.Generator, n: int, theta: float, sd: float = 1.0) -> np.ndarray:
    """An Ornstein-Uhlenbeck process sampled exactly at unit steps (mean reversion rate theta, stationary sd)."""
    phi = math.exp(-theta)
    return ar1(rng, n, phi, sd * math.sqrt(1.0 - phi * phi))


def pair(seed: int, n: int = 1500, beta: float = 1.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = 8.0 + np.cumsum(rng.standard_normal(n) * 0.01)
    y = 0.5 + beta * x + ou(rng, n, 0.05, 0.004)
    return y, x


def series_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    y, _ = pair(4, n=1000)
    return {
        "ar09": ar1(rng, 1000, 0.9),  # stationary
        "random_walk": np.cumsum(rng.standard_normal(1000)),
        "near_unit_root": ar1(rng, 600, 0.99) + 5.0,
        "walk_with_trend": 0.01 * np.arange(800) + np.cumsum(rng.standard_normal(800)),
        "short": np.cumsum(rng.standard_normal(40)),
        "cointegrated_leg": y,
    }


CASES = series_cases()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ols_matches_statsmodels(seed: int) -> None:
    y, x = pair(seed)
    alpha, beta, resid = ols(y, x)
    res = sm_api.OLS(y, sm_api.add_constant(x)).fit()
    assert alpha == pytest.approx(res.params[0], rel=1e-10)
    assert beta == pytest.approx(res.params[1], rel=1e-12)
    np.testing.assert_allclose(resid, res.resid, rtol=0, atol=1e-12)
    assert ols([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])[:2] == (2.0, 0.0)  # var(x) == 0


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("regression", ["c", "n", "ct"])
def test_adf_matches_adfuller(name: str, regression: str) -> None:
    x = CASES[name]
    for autolag in ("AIC", "BIC", "t-stat", None):
        maxlag = None if autolag else 3
        stat, p, lag, nobs = adf(x, maxlag=maxlag, autolag=autolag, regression=regression)
        ref = sm_adf(x, maxlag=maxlag, autolag=autolag, regression=regression)
        what = (name, regression, autolag)
        assert (lag, nobs) == (ref[2], ref[3]), what
        assert stat == pytest.approx(ref[0], rel=1e-9, abs=1e-12), what
        assert p == pytest.approx(ref[1], rel=1e-9, abs=1e-14), what
    if regression == "c":  # an explicit maximum lag with AIC selection
        got = adf(x, maxlag=2, regression=regression)
        ref = sm_adf(x, maxlag=2, regression=regression)
        assert got[2:] == tuple(ref[2:4]) and got[0] == pytest.approx(ref[0], rel=1e-9)


def test_adf_verdicts_and_errors() -> None:
    assert adf(CASES["ar09"])[1] < 0.001  # stationary
    assert adf(CASES["random_walk"])[1] > 0.05  # unit root not rejected
    with pytest.raises(ValueError, match="constant"):
        adf(np.ones(100))
    with pytest.raises(ValueError, match="maxlag"):
        adf(CASES["random_walk"][:20], maxlag=15)
    with pytest.raises(ValueError, match="NaN"):
        adf([1.0, 2.0, math.nan, 3.0] * 10)


def test_mackinnonp_matches_statsmodels() -> None:
    stats = np.concatenate([np.linspace(-30, 4, 341), [-18.85, -2.62, -1.61, 0.92, 2.74, -19.1]])
    for regression in ("n", "c", "ct"):
        for n in (1, 2):
            for t in stats:
                ref = sm_mackinnonp(float(t), regression=regression, N=n)
                assert mackinnonp(float(t), regression, n) == pytest.approx(ref, rel=1e-12, abs=1e-300), \
                    (regression, n, t)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_engle_granger_matches_coint(seed: int) -> None:
    y, x = pair(seed)
    stat, p, beta = engle_granger(y, x)
    ref_stat, ref_p = sm_coint(y, x)
    assert stat == pytest.approx(ref_stat, rel=1e-9)
    assert p == pytest.approx(ref_p, rel=1e-9, abs=1e-14)
    assert beta == pytest.approx(sm_api.OLS(y, sm_api.add_constant(x)).fit().params[1], rel=1e-12)
    assert p < 0.01 and abs(beta - 1.3) < 0.1
    # two independent random walks: no cointegration, and still the same numbers as statsmodels
    rng = np.random.default_rng(seed + 100)
    a, b = np.cumsum(rng.standard_normal(1000)), np.cumsum(rng.standard_normal(1000))
    stat, p, _ = engle_granger(a, b)
    ref_stat, ref_p = sm_coint(a, b)
    assert stat == pytest.approx(ref_stat, rel=1e-9) and p == pytest.approx(ref_p, rel=1e-9)


def test_engle_granger_collinear() -> None:
    x = np.cumsum(np.random.default_rng(9).standard_normal(300))
    stat, p, beta = engle_granger(2.0 * x + 1.0, x)
    assert stat == -math.inf and p == 0.0 and beta == pytest.approx(2.0)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_hurst(seed: int) -> None:
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal(20000))
    assert hurst(walk) == pytest.approx(0.5, abs=0.05)
    assert hurst(ou(rng, 20000, 0.05)) < 0.4  # half-life ~14 steps: mean-reverting over lags 2..100
    with pytest.raises(ValueError, match="too short"):
        hurst(walk[:5])


@pytest.mark.parametrize(("seed", "theta"), [(21, 0.05), (22, 0.02), (23, 0.1)])
def test_half_life_of_ou(seed: int, theta: float) -> None:
    s = ou(np.random.default_rng(seed), 100_000, theta)
    assert half_life(s) == pytest.approx(math.log(2.0) / theta, rel=0.1)


def test_half_life_of_non_reverting() -> None:
    rng = np.random.default_rng(31)
    assert half_life(np.cumsum(1.0 + rng.standard_normal(5000))) == math.inf or \
        half_life(np.cumsum(1.0 + rng.standard_normal(5000))) > 500


def test_scan_pairs_ranks_the_cointegrated_pair_first() -> None:
    y, x = pair(7, n=2000, beta=1.2)
    rng = np.random.default_rng(8)
    other = 4.0 + np.cumsum(rng.standard_normal(2000) * 0.01)
    third = 3.0 + np.cumsum(rng.standard_normal(2000) * 0.01)
    closes = {"SOL": np.exp(other), "BTC": np.exp(y), "XRP": np.exp(third), "ETH": np.exp(x)}
    closes["XRP"][100:150] = np.nan  # missing minutes only shrink that symbol's pairs
    rows = scan_pairs(closes)
    assert len(rows) == 6
    top = rows[0]
    assert {top["a"], top["b"]} == {"BTC", "ETH"} and top["n"] == 2000
    assert top["pvalue"] < 0.001 and top["pvalue"] <= min(r["pvalue"] for r in rows)
    beta = top["beta"] if top["a"] == "BTC" else 1.0 / top["beta"]
    assert beta == pytest.approx(1.2, rel=0.1)
    assert top["hurst"] < 0.45 and 5 < top["half_life"] < 40  # OU with theta 0.05: ln 2 / 0.05 = 13.9 steps
    assert [r["pvalue"] for r in rows] == sorted(r["pvalue"] for r in rows)
    assert all(r["n"] == 1950 for r in rows if "XRP" in (r["a"], r["b"]))
    # the row equals the building blocks on the same data
    la, lb = np.log(closes[top["a"]]), np.log(closes[top["b"]])
    stat, p, b = engle_granger(la, lb)
    assert (top["eg_stat"], top["pvalue"], top["beta"]) == (stat, p, b)
    # too few common minutes: NaN measures, ranked last
    short = scan_pairs({"A": np.exp(x[:50]), "B": np.exp(y[:50]), "C": np.exp(other[:50])}, min_obs=100)
    assert all(math.isnan(r["pvalue"]) for r in short)
    with pytest.raises(ValueError, match="aligned"):
        scan_pairs({"A": np.ones(10), "B": np.ones(11)})
