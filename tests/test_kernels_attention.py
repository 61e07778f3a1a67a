"""The native rope, GLU, softmax and attention kernels against float64 numpy.

Every kernel gets the same fp32 (or fp16) inputs as its float64 reference, so the bounds
measure only the kernel's own fp32 arithmetic:

  rope                 NMSE < 1e-13 (one fused multiply-add per output)
  silu                 |err| <= 3e-7 |ref| per element (~4 ulp; exp is ~2 ulp), NMSE < 1e-13
  gelu                 |err| <= 3e-7 (1 + |z|) |ref|, z = 2 sqrt(2/pi) (g + 0.044715 g^3):
                       the fp32 rounding of z is amplified by |z| where sigmoid(z) is tiny
                       (negative g), so relative error grows there; NMSE < 1e-12
  softmax              NMSE < 1e-12, and each output within (3 + |x - max| / 1e-7) 1e-7
                       relative (the fp32 x - max carries |x - max| 2^-24 into exp)
  attention scores     vs float64 on the same fp16 keys: sum (err^2) / sum (|ref|^2) < 1e-13
                       where |ref| is the same product over |q| and |k|; a plain NMSE
                       would measure fp32 cancellation in a score that happens to be near
                       0, not the kernel. Plain NMSE < 1e-12 on a real decode step.
  attention values     likewise, with |p| @ |V|, < 1e-12: each output lane is one fp32
                       sum over all n_values rows (1.5e-13 at 300 rows)

Elements whose exact value is below ~1e-30 (deep in the sigmoid's tail) are held to an
absolute bound instead: the kernels flush exp below FLT_MIN to 0.

Sizes are odd on purpose (tails of every width), buffers carry sentinels on both sides,
and a second set of runs places every array against an inaccessible page on either side,
so a read or write outside the arguments' rows crashes the test.
"""
from __future__ import annotations

import numpy as np
import pytest

from kernel_reference import family_params, guarded, nmse, pointer
from lila.native import library

FAMILIES = family_params()
SENTINEL = np.float32(-12345.678)
PAD = 16          # sentinel elements on each side of an output


def kernels(family):
    native = library()
    return native, native.kernels(family)


def padded(values: np.ndarray) -> np.ndarray:
    """fp32 values with PAD sentinels on each side; kernels get a pointer to inner()."""
    out = np.full(values.size + 2 * PAD, SENTINEL, np.float32)
    out[PAD:-PAD] = values.ravel()
    return out


def inner(buf: np.ndarray) -> np.ndarray:
    return buf[PAD:-PAD]


def assert_sentinels(buf: np.ndarray) -> None:
    assert np.all(buf[:PAD] == SENTINEL), "a kernel wrote before its output"
    assert np.all(buf[-PAD:] == SENTINEL), "a kernel wrote past its output"


# ---------------------------------------------------------------- references (float64)

def rope_reference(x, head_dim, rot_dim, cos_sin, neox):
    x = x.astype(np.float64).reshape(-1, head_dim).copy()
    half = rot_dim // 2
    c, s = cos_sin[:half].astype(np.float64), cos_sin[half:].astype(np.float64)
    first = np.arange(half) if neox else 2 * np.arange(half)
    second = first + half if neox else first + 1
    a, b = x[:, first].copy(), x[:, second].copy()
    x[:, first], x[:, second] = a * c - b * s, b * c + a * s
    return x.ravel()


def sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def gelu_z(g):
    return 2 * np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3)


def glu_reference(act, gate, up):
    g = gate.astype(np.float64)
    z = g if act == "silu" else gelu_z(g)
    with np.errstate(over="ignore", invalid="ignore"):
        return g * sigmoid(z) * up.astype(np.float64), z


def softmax_reference(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


# ---------------------------------------------------------------- rope

ROPE_SHAPES = [(64, 64), (128, 128), (256, 256), (80, 80), (64, 32), (128, 64), (80, 48),
               (96, 50), (64, 62), (22, 14), (18, 18), (6, 4), (2, 2), (3, 2)]


def rope_inputs(rng, heads, head_dim, rot_dim):
    x = rng.standard_normal(heads * head_dim).astype(np.float32) * 3
    pos = rng.integers(0, 4096)
    angles = pos * 10000.0 ** (-np.arange(rot_dim // 2) * 2 / rot_dim)
    cos_sin = np.concatenate([np.cos(angles), np.sin(angles)]).astype(np.float32)
    return x, cos_sin


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("neox", [True, False], ids=["neox", "interleaved"])
@pytest.mark.parametrize("head_dim,rot_dim", ROPE_SHAPES)
@pytest.mark.parametrize("heads", [1, 2, 5, 9])
def test_rope(family, neox, head_dim, rot_dim, heads):
    native, k = kernels(family)
    rng = np.random.default_rng(head_dim * 1000 + rot_dim * 10 + heads)
    x, cos_sin = rope_inputs(rng, heads, head_dim, rot_dim)
    buf = padded(x)
    fn = k.rope_neox if neox else k.rope_interleaved
    fn(pointer(native, inner(buf), "float *"), heads, head_dim, rot_dim,
       pointer(native, cos_sin, "float *"))
    expected = rope_reference(x, head_dim, rot_dim, cos_sin, neox)
    assert nmse(inner(buf), expected) < 1e-13
    got = inner(buf).reshape(heads, head_dim)
    assert np.array_equal(got[:, rot_dim:], x.reshape(heads, head_dim)[:, rot_dim:])
    assert_sentinels(buf)


@pytest.mark.parametrize("family", FAMILIES)
def test_rope_position_zero_is_identity(family):
    native, k = kernels(family)
    x = np.random.default_rng(1).standard_normal(3 * 80).astype(np.float32)
    cos_sin = np.concatenate([np.ones(37), np.zeros(37)]).astype(np.float32)
    for fn in (k.rope_neox, k.rope_interleaved):
        y = x.copy()
        fn(pointer(native, y, "float *"), 3, 80, 74, pointer(native, cos_sin, "float *"))
        assert np.array_equal(y, x)


# ---------------------------------------------------------------- silu / gelu

GLU_SIZES = [1, 5, 8, 13, 64, 100, 1000, 4099]


def check_glu(act, gate, up, got):
    expected, z = glu_reference(act, gate, up)
    err = np.abs(got.astype(np.float64) - expected)
    rel = 3e-7 * (1 if act == "silu" else 1 + np.abs(z)) * np.abs(expected)
    tiny = np.abs(expected) <= 1e-30 * np.abs(up)
    assert np.all(np.isfinite(got))
    assert np.all((err <= rel) | tiny), "relative error over bound"
    assert np.all(err[tiny] <= 1e-30 * np.abs(up[tiny]))
    return nmse(got, expected)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("act", ["silu", "gelu"])
@pytest.mark.parametrize("n", GLU_SIZES)
def test_glu(family, act, n):
    native, k = kernels(family)
    rng = np.random.default_rng(n)
    gate = (rng.standard_normal(n) * 4).astype(np.float32)
    up = rng.standard_normal(n).astype(np.float32)
    out = padded(np.zeros(n, np.float32))
    getattr(k, act + "_mul")(pointer(native, gate, "float *"), pointer(native, up, "float *"),
                             n, pointer(native, inner(out), "float *"))
    error = check_glu(act, gate, up, inner(out))
    assert error < (1e-13 if act == "silu" else 1e-12)
    assert_sentinels(out)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("act", ["silu", "gelu"])
def test_glu_dense_range(family, act):
    """Every sigmoid regime, down to where exp underflows, at fp32 spacing near 0."""
    native, k = kernels(family)
    gate = np.concatenate([np.linspace(-120, 120, 240_001),
                           np.linspace(-1e-3, 1e-3, 2001)]).astype(np.float32)
    up = np.ones_like(gate)
    out = np.empty_like(gate)
    getattr(k, act + "_mul")(pointer(native, gate, "float *"), pointer(native, up, "float *"),
                             gate.size, pointer(native, out, "float *"))
    assert check_glu(act, gate, up, out) < 1e-13


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("act", ["silu", "gelu"])
def test_glu_edges(family, act):
    """Huge gates give exactly the limits (g or -0), -0 and 0 stay signed zeros, no NaN."""
    native, k = kernels(family)
    gate = np.array([1e4, -1e4, 1e20, -1e20, 3e38, -3e38, 100, -100, 0.0, -0.0, 1e-30,
                     -1e-30, 88.5, -88.5, 1e4], np.float32)
    up = np.array([1, 1, 2, 2, 1, 1, -1, -1, 3, 3, 1, 1, 1, 1, 0], np.float32)
    out = np.empty_like(gate)
    getattr(k, act + "_mul")(pointer(native, gate, "float *"), pointer(native, up, "float *"),
                             gate.size, pointer(native, out, "float *"))
    assert np.all(np.isfinite(out))
    assert out[0] == 1e4 and out[2] == 2e20 and out[4] == np.float32(3e38) and out[6] == -100
    assert out[12] == np.float32(88.5) and out[14] == 0
    for i in (1, 3, 5, 7, 13):         # g * sigmoid(g) underflows: a zero of g * up's sign
        assert out[i] == 0 and np.signbit(out[i]) == (up[i] > 0)
    assert out[8] == 0 and not np.signbit(out[8])
    assert out[9] == 0 and np.signbit(out[9])
    # both are g / 2 near 0
    assert abs(out[10] - np.float32(0.5e-30)) <= 1e-7 * 0.5e-30
    assert abs(out[11] + np.float32(0.5e-30)) <= 1e-7 * 0.5e-30


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("act", ["silu", "gelu"])
@pytest.mark.parametrize("alias", ["gate", "up"])
def test_glu_in_place(family, act, alias):
    native, k = kernels(family)
    n = 37
    rng = np.random.default_rng(7)
    gate = (rng.standard_normal(n) * 3).astype(np.float32)
    up = rng.standard_normal(n).astype(np.float32)
    expected = np.empty_like(gate)
    fn = getattr(k, act + "_mul")
    fn(pointer(native, gate, "float *"), pointer(native, up, "float *"), n,
       pointer(native, expected, "float *"))
    g, u = gate.copy(), up.copy()
    out = g if alias == "gate" else u
    fn(pointer(native, g, "float *"), pointer(native, u, "float *"), n,
       pointer(native, out, "float *"))
    assert np.array_equal(out, expected)


# ---------------------------------------------------------------- softmax

SOFTMAX_SIZES = [1, 2, 5, 8, 13, 64, 100, 1000, 4099, 32771]


def run_softmax(native, k, x):
    buf = padded(x.astype(np.float32))
    k.softmax(pointer(native, inner(buf), "float *"), x.size)
    assert_sentinels(buf)
    return inner(buf).copy()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("n", SOFTMAX_SIZES)
@pytest.mark.parametrize("masked", [False, True])
def test_softmax(family, n, masked):
    native, k = kernels(family)
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 6).astype(np.float32)
    if masked:              # a causal mask: the later keys, and some scattered ones
        x[n // 2 + 1:] = -np.inf
        x[1: n // 2: 3] = -np.inf
    got = run_softmax(native, k, x)
    expected = softmax_reference(x)
    assert nmse(got, expected) < 1e-12
    live = np.isfinite(x)
    distance = x[live].astype(np.float64) - x.max()
    assert np.all(np.abs(got - expected)[live] <= (3e-7 - 1e-7 * distance) * expected[live])
    assert np.all(got[~live] == 0)
    assert abs(got.sum(dtype=np.float64) - 1) < 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_softmax_edges(family):
    native, k = kernels(family)
    assert run_softmax(native, k, np.array([-3.5]))[0] == 1
    assert run_softmax(native, k, np.array([1e30]))[0] == 1
    # constant rows are uniform, whatever the offset
    for value in (0.0, -1e4, 1e4, 3e38):
        got = run_softmax(native, k, np.full(13, value))
        assert np.allclose(got, 1 / 13, rtol=1e-6, atol=0)
    # huge spread: the maximum takes everything, the rest underflow to exactly 0
    x = np.array([1e4, -1e4, 0, 5e3, -np.inf, 9999, 1e4 - 200, 2, 3], np.float32)
    got = run_softmax(native, k, x)
    expected = softmax_reference(x)
    assert nmse(got, expected) < 1e-12
    assert got[1] == got[2] == got[3] == got[4] == got[6] == got[7] == got[8] == 0
    # the max in the tail lanes only, and negative rows (absent tail lanes are not 0)
    x = -np.arange(1, 14, dtype=np.float32)[::-1] - 100
    got = run_softmax(native, k, x)
    assert nmse(got, softmax_reference(x)) < 1e-12


# ---------------------------------------------------------------- attention

HEAD_DIMS = [1, 7, 8, 9, 15, 64, 80, 100, 128, 136, 256]
N_KEYS = [1, 2, 7, 8, 9, 17, 300]


def cache_rows(rng, n, hd, pad):
    """n fp16 rows of hd values, stride hd + pad; values as a K/V cache holds them."""
    rows = (rng.standard_normal((n, hd + pad)) * 2).astype(np.float16)
    rows[:, hd:] = np.float16(np.nan)      # never read: would poison the result
    return rows


def scores_reference(q, keys, hd, scale, absolute=False):
    k, q = keys[:, :hd].astype(np.float64), q.astype(np.float64)
    if absolute:
        k, q = np.abs(k), np.abs(q)
    return np.float64(np.float32(scale)) * (k @ q)


def values_reference(p, values, hd, absolute=False):
    v, p = values[:, :hd].astype(np.float64), p.astype(np.float64)
    if absolute:
        v, p = np.abs(v), np.abs(p)
    return p @ v


def conditioned_nmse(actual, expected, magnitude):
    """NMSE against the magnitude of the terms summed (|a| @ |b|) rather than the sum."""
    actual = np.asarray(actual, np.float64)
    return float(np.sum((actual - expected) ** 2) / np.sum(magnitude ** 2))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("hd", HEAD_DIMS)
@pytest.mark.parametrize("n_keys", N_KEYS)
@pytest.mark.parametrize("pad", [0, 5])
def test_attn_scores(family, hd, n_keys, pad):
    native, k = kernels(family)
    rng = np.random.default_rng(hd * 1000 + n_keys * 10 + pad)
    q = rng.standard_normal(hd).astype(np.float32)
    keys = cache_rows(rng, n_keys, hd, pad)
    scale = 1 / np.sqrt(hd)
    out = padded(np.zeros(n_keys, np.float32))
    k.attn_scores(pointer(native, q, "float *"), pointer(native, keys, "uint16_t *"), hd + pad,
                  n_keys, hd, scale, pointer(native, inner(out), "float *"))
    expected = scores_reference(q, keys, hd, scale)
    magnitude = scores_reference(q, keys, hd, scale, absolute=True)
    assert conditioned_nmse(inner(out), expected, magnitude) < 1e-13
    assert_sentinels(out)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("hd", HEAD_DIMS)
@pytest.mark.parametrize("n_values", N_KEYS)
@pytest.mark.parametrize("pad", [0, 5])
def test_attn_values(family, hd, n_values, pad):
    native, k = kernels(family)
    rng = np.random.default_rng(hd * 1000 + n_values * 10 + pad + 1)
    p = softmax_reference(rng.standard_normal(n_values) * 3).astype(np.float32)
    values = cache_rows(rng, n_values, hd, pad)
    out = padded(np.zeros(hd, np.float32))
    k.attn_values(pointer(native, p, "float *"), pointer(native, values, "uint16_t *"),
                  hd + pad, n_values, hd, pointer(native, inner(out), "float *"))
    expected = values_reference(p, values, hd)
    magnitude = values_reference(p, values, hd, absolute=True)
    assert conditioned_nmse(inner(out), expected, magnitude) < 1e-12
    assert_sentinels(out)


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_head(family):
    """scores -> softmax -> values for one head with a causal mask, as decode runs them,
    against the float64 attention on the same fp16 cache."""
    native, k = kernels(family)
    rng = np.random.default_rng(3)
    hd, n_ctx, pos = 64, 40, 29
    q = rng.standard_normal(hd).astype(np.float32)
    keys, values = cache_rows(rng, n_ctx, hd, 0), cache_rows(rng, n_ctx, hd, 0)
    scores = np.full(n_ctx, -np.inf, np.float32)
    scale = 1 / np.sqrt(hd)
    k.attn_scores(pointer(native, q, "float *"), pointer(native, keys, "uint16_t *"), hd,
                  pos + 1, hd, scale, pointer(native, scores, "float *"))
    k.softmax(pointer(native, scores, "float *"), n_ctx)
    out = np.empty(hd, np.float32)
    k.attn_values(pointer(native, scores, "float *"), pointer(native, values, "uint16_t *"),
                  hd, n_ctx, hd, pointer(native, out, "float *"))
    expected_p = softmax_reference(scores_reference(q, keys[:pos + 1], hd, scale))
    expected = values_reference(expected_p, values[:pos + 1], hd)
    assert np.all(scores[pos + 1:] == 0)
    assert nmse(out, expected) < 1e-12


# ---------------------------------------------------------------- memory bounds

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("at_end", [True, False], ids=["guard-after", "guard-before"])
def test_no_access_outside_arguments(family, at_end):
    """Every argument against an inaccessible page: an access past either end crashes."""
    native, k = kernels(family)
    rng = np.random.default_rng(5)
    ptr = lambda a, t="float *": pointer(native, a, t)   # noqa: E731
    for hd in (1, 7, 9, 15, 64, 100):
        for n in (1, 3, 9, 17):
            q = guarded(rng.standard_normal(hd).astype(np.float32), at_end)
            keys = guarded(cache_rows(rng, n, hd, 0), at_end)
            scores = guarded(np.zeros(n, np.float32), at_end)
            k.attn_scores(ptr(q), ptr(keys, "uint16_t *"), hd, n, hd, 0.5, ptr(scores))
            assert conditioned_nmse(scores, scores_reference(q, keys, hd, 0.5),
                                    scores_reference(q, keys, hd, 0.5, absolute=True)) < 1e-13
            k.softmax(ptr(scores), n)
            out = guarded(np.zeros(hd, np.float32), at_end)
            k.attn_values(ptr(scores), ptr(keys, "uint16_t *"), hd, n, hd, ptr(out))
            assert conditioned_nmse(out, values_reference(scores, keys, hd),
                                    values_reference(scores, keys, hd, absolute=True)) < 1e-12
    for n in (1, 5, 13, 100):
        gate = guarded((rng.standard_normal(n) * 4).astype(np.float32), at_end)
        up = guarded(rng.standard_normal(n).astype(np.float32), at_end)
        out = guarded(np.zeros(n, np.float32), at_end)
        for act in ("silu", "gelu"):
            getattr(k, act + "_mul")(ptr(gate), ptr(up), n, ptr(out))
            check_glu(act, gate, up, out)
    for head_dim, rot_dim in ((6, 6), (22, 14), (64, 64), (18, 18)):
        x, cos_sin = rope_inputs(rng, 3, head_dim, rot_dim)
        for neox in (True, False):
            y = guarded(x, at_end)
            cs = guarded(cos_sin, at_end)
            (k.rope_neox if neox else k.rope_interleaved)(ptr(y), 3, head_dim, rot_dim, ptr(cs))
            assert nmse(y, rope_reference(x, head_dim, rot_dim, cos_sin, neox)) < 1e-13
