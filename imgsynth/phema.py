"""Power-function EMA and its post-hoc reconstruction (Karras et al. 2024, "Analyzing and
Improving the Training Dynamics of Diffusion Models", §3 and Appendix C; EDM2).

A fixed decay suits one run length: a 0.999 average lags a 2k-step run and barely averages a
100k-step one. A power-function profile averages the weights seen up to step t with density
∝ τ^γ, so its width relative to t, σ_rel, is the same at every length. Training tracks two such
profiles and saves both at a few points (`snapshot_steps`); afterwards any σ_rel is rebuilt as the
least-squares combination of the snapshots (`solve_coefficients`), and the best one is chosen on
validation data (`imgsynth.ema`). σ_rel and γ are related by σ_rel² = (γ+1) / ((γ+2)²(γ+3)),
which peaks at γ = (√5−3)/2: wider profiles do not exist (`MAX_SIGMA_REL` ≈ 0.3003).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from imgsynth import config as config_lib


def exp_to_std(exp):
    """σ_rel of the profile τ^γ (EDM2 eq. 123)."""
    exp = np.float64(exp)
    return np.sqrt((exp + 1) / (exp + 2) ** 2 / (exp + 3))


MAX_SIGMA_REL = float(exp_to_std((math.sqrt(5.0) - 3.0) / 2.0))   # the widest profile


def check_sigma_rels(values: Sequence[float], name: str) -> tuple[float, ...]:
    """`values` as floats, each in (0, MAX_SIGMA_REL); otherwise a one-line ConfigError."""
    out = []
    for v in values:
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise config_lib.ConfigError(f"{name}: {v!r} is not a number") from None
        if not 0.0 < v < MAX_SIGMA_REL:
            raise config_lib.ConfigError(
                f"{name}={v:g}: a power-function EMA needs 0 < σ_rel < {MAX_SIGMA_REL:.4f} "
                "(wider profiles have no exponent γ > -1)")
        out.append(v)
    if not out:
        raise config_lib.ConfigError(f"{name}: give at least one σ_rel")
    return tuple(out)


def std_to_exp(std):
    """γ of the profile with relative width σ_rel: the largest real root of
    γ³ + 7γ² + (16 − σ⁻²)γ + 12 − σ⁻² (EDM2 eq. 126, Algorithm 2)."""
    std = np.asarray(std, np.float64)
    roots = [np.roots([1.0, 7.0, 16.0 - t, 12.0 - t]).real.max() for t in std.ravel() ** -2]
    return np.float64(roots).reshape(std.shape)


def beta(exp: float, t):
    """The decay of update `t` (1-based: t = 1 copies the weights) that tracks the profile τ^γ
    (EDM2 eq. 127 with t counted in steps)."""
    t = jnp.asarray(t, jnp.float32)
    return (1.0 - 1.0 / t) ** (exp + 1.0)


def correlation(a_t, a_std, b_t, b_std):
    """Inner products of the profiles (a_t, a_std) and (b_t, b_std) (EDM2 eq. 151)."""
    a_exp, b_exp = std_to_exp(a_std), std_to_exp(b_std)
    ratio = a_t / b_t
    exponent = np.where(a_t < b_t, b_exp, -a_exp)
    return (a_exp + 1) * (b_exp + 1) * ratio ** exponent / ((a_exp + b_exp + 1)
                                                           * np.maximum(a_t, b_t))


def solve_coefficients(in_t, in_std, out_t, out_std) -> np.ndarray:
    """Coefficients [in, out] that combine the snapshots (in_t, in_std) into the profiles
    (out_t, out_std) closest in L2, normalised to sum to one (EDM2 Algorithm 3)."""
    in_t, in_std = np.broadcast_arrays(np.float64(in_t), np.float64(in_std))
    out_t, out_std = np.broadcast_arrays(np.float64(out_t), np.float64(out_std))
    col, row = (lambda x: x.reshape(-1, 1)), (lambda x: x.reshape(1, -1))
    a = correlation(col(in_t), col(in_std), row(in_t), row(in_std))
    b = correlation(col(in_t), col(in_std), row(out_t), row(out_std))
    x = np.linalg.solve(a, b)
    return x / np.sum(x, axis=0)


def all_tracked(sigma_rels: Sequence[float], tracked: Sequence[float]) -> bool:
    """Whether every width of `sigma_rels` is a tracked profile: each is then that profile's last
    snapshot, exactly, and choosing among them reads nothing else."""
    return set(sigma_rels) <= set(tracked)


def snapshot_steps(total_steps: int, count: int) -> tuple[int, ...]:
    """`count` steps spread evenly over a run, ending at its last step."""
    if count < 1:
        raise config_lib.ConfigError(f"ema.snapshots={count}: save at least one snapshot")
    return tuple(sorted({max(1, round(total_steps * k / count)) for k in range(1, count + 1)}))
