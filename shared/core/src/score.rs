//! Blocked scoring kernels: the dot products of one user vector with a run of
//! consecutive item rows, four rows per pass with two accumulators each (eight
//! independent FMA chains), so the loads of the user vector are shared and the
//! FMA latency is hidden. AVX-512 (16 lanes) and AVX2+FMA (8 lanes) are compiled
//! behind `#[target_feature]` and chosen at run time, as in recs-train's kernels;
//! everything else (other CPUs, factor counts that are not a multiple of the lane
//! width) uses the portable [`dot`](crate::topk::dot). The choice is [`Simd`], the
//! crate's one CPU-feature detection: `RECS_SIMD=portable|avx2` caps it (read once;
//! the rule is on [`Simd::detected`]).
//!
//! The arithmetic is exact f32 multiply-adds; only the summation order differs
//! between flavours, so scores agree to a few ulps.

use crate::topk::dot;

pub use crate::cpu::Simd;

/// `out[i] = user · items[i]` for the `out.len()` consecutive rows (of `user.len()`
/// values each) at the start of `items`, with the detected kernel.
pub fn scores(user: &[f32], items: &[f32], out: &mut [f32]) {
    scores_with(Simd::detected(), user, items, out)
}

/// [`scores`] with a given flavour; one the CPU lacks, or that does not divide the
/// factor count, falls back to the portable kernel.
///
/// # Panics
///
/// If `items` holds fewer than `out.len()` rows of `user.len()` values.
pub fn scores_with(simd: Simd, user: &[f32], items: &[f32], out: &mut [f32]) {
    let f = user.len();
    assert!(items.len() >= out.len() * f, "items hold out.len() rows");
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(t) = simd.avx512().filter(|_| f.is_multiple_of(16) && f > 0) {
            x86::scores_avx512(t, user, items, out);
            return;
        }
        if let Some(t) = simd.avx2_fma().filter(|_| f.is_multiple_of(8) && f > 0) {
            x86::scores_avx2(t, user, items, out);
            return;
        }
    }
    let _ = simd;
    for (o, item) in out.iter_mut().zip(items.chunks_exact(f.max(1))) {
        *o = dot(user, item);
    }
}

/// Item factors as int8 with one scale per row (`y ≈ scale · q`, |q| <= 127), a
/// quarter of the f32 bytes: a first pass over them bounds every score, and only
/// the rows that can still reach the top k are scored exactly in f32
/// ([`AlsModel::recommend_vector`](crate::AlsModel::recommend_vector)).
#[derive(Debug)]
pub struct QuantizedItems {
    q: Vec<i8>,
    scale: Vec<f32>,
    /// Σ_j q[i][j] per row: the AVX2 kernel multiplies by the user biased to be
    /// unsigned (p + 64) and takes 64 · Σq back off.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    sums: Vec<i32>,
    /// Σ_j |q[i][j]| per row, for the bound on the user's rounding.
    l1: Vec<f32>,
    f: usize,
}

impl QuantizedItems {
    /// Quantizes a C-order items x `f` matrix, row by row (symmetric, round to nearest).
    pub fn new(items: &[f32], f: usize) -> Self {
        let rows = items.len() / f.max(1);
        let mut q = Vec::with_capacity(rows * f);
        let mut scale = Vec::with_capacity(rows);
        let mut sums = Vec::with_capacity(rows);
        let mut l1 = Vec::with_capacity(rows);
        for row in items.chunks_exact(f.max(1)) {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            scale.push(s);
            let start = q.len();
            q.extend(
                row.iter()
                    .map(|v| (v / s).round().clamp(-127.0, 127.0) as i8),
            );
            let qrow = &q[start..];
            sums.push(qrow.iter().map(|&v| i32::from(v)).sum());
            l1.push(qrow.iter().map(|&v| f32::from(v).abs()).sum());
        }
        QuantizedItems {
            q,
            scale,
            sums,
            l1,
            f,
        }
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.scale.len()
    }

    /// The per-row scales.
    pub fn scales(&self) -> &[f32] {
        &self.scale
    }

    /// The per-row Σ|q| (for the user-rounding term of the bound).
    pub fn l1(&self) -> &[f32] {
        &self.l1
    }

    /// Unscaled approximate scores `Σ_j q[i][j] · user.p[j]` of rows
    /// `first..first + out.len()`, in exact integer arithmetic: every flavour gives
    /// the same result, bit for bit.
    pub fn raw_scores(&self, simd: Simd, user: &QuantizedUser, first: usize, out: &mut [i32]) {
        let f = self.f;
        assert_eq!(user.p.len(), f, "user vector width");
        let q = &self.q[first * f..(first + out.len()) * f];
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(t) = simd.avx2_fma().filter(|_| f.is_multiple_of(32)) {
                x86::raw_u8_i8_avx2(t, &user.biased, q, out);
                for (o, &sum) in out.iter_mut().zip(&self.sums[first..]) {
                    *o -= QuantizedUser::BIAS * sum;
                }
                return;
            }
        }
        let _ = simd;
        for (o, row) in out.iter_mut().zip(q.chunks_exact(f.max(1))) {
            *o = row
                .iter()
                .zip(&user.p)
                .map(|(&a, &b)| i32::from(a) * i32::from(b))
                .sum();
        }
    }
}

/// A user vector at 7 bits (`u ≈ scale · p`, |p| <= 63) for the integer first pass
/// over [`QuantizedItems`]. Seven bits let the AVX2 kernel use `vpmaddubsw` (32
/// multiply-adds per instruction) with the user biased to 1..=127: a pair of
/// products is at most 2 · 127 · 127 < 2¹⁵, so nothing saturates. The coarser user
/// widens the bound; only a few more rows get re-scored exactly.
#[derive(Debug)]
pub struct QuantizedUser {
    p: Vec<i8>,
    /// p + 64, for the AVX2 kernel's unsigned operand.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    biased: Vec<u8>,
    scale: f32,
}

impl QuantizedUser {
    /// Largest |p|.
    const LEVELS: f32 = 63.0;
    /// Added to p for the unsigned operand.
    const BIAS: i32 = 64;
    /// Largest factor count the int32 sums hold exactly (127 · 127 · f < 2³¹) and
    /// whose sums convert to f32 exactly (127 · 63 · f < 2²⁴).
    pub const MAX_FACTORS: usize = 2_096;

    /// Quantizes `user` (symmetric, round to nearest); `None` when it has more than
    /// [`MAX_FACTORS`](Self::MAX_FACTORS) values or a non-finite one.
    pub fn new(user: &[f32]) -> Option<Self> {
        if user.len() > Self::MAX_FACTORS || user.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let max = user.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / Self::LEVELS } else { 1.0 };
        let p: Vec<i8> = user
            .iter()
            .map(|v| (v / scale).round().clamp(-Self::LEVELS, Self::LEVELS) as i8)
            .collect();
        let biased = p
            .iter()
            .map(|&v| (i32::from(v) + Self::BIAS) as u8)
            .collect();
        Some(QuantizedUser { p, biased, scale })
    }

    /// The scale: `u[j] = scale · p[j] + e[j]` with |e[j]| <= scale / 2.
    pub fn scale(&self) -> f32 {
        self.scale
    }
}

/// The `#[target_feature]` kernels, reachable only through the safe functions that
/// take the token of their features and check the bounds once per call.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::cpu::{Avx2Fma, Avx512};

    /// `out[i] = Σ_j user[j] · q[i][j]` for the `out.len()` rows of `user.len()`
    /// values at the start of `q`. `user` holds 1..=127 (the biased user), so each
    /// `vpmaddubsw` pair sum stays below 2¹⁵; `vpmaddwd` by ones widens to int32.
    /// Four rows at a time share the user loads. The caller takes the bias back off
    /// (and keeps f <= [`QuantizedUser::MAX_FACTORS`](super::QuantizedUser::MAX_FACTORS)
    /// so the int32 sums are exact; that is arithmetic, not memory safety).
    ///
    /// # Panics
    ///
    /// If `user.len()` is not a multiple of 32 or `q` holds fewer than `out.len()` rows.
    pub(super) fn raw_u8_i8_avx2(_: Avx2Fma, user: &[u8], q: &[i8], out: &mut [i32]) {
        let f = user.len();
        assert!(f.is_multiple_of(32), "the user width is a multiple of 32");
        assert!(q.len() >= out.len() * f, "q holds out.len() rows");
        // SAFETY: the token proves AVX2; the bounds were checked just above.
        unsafe { raw_u8_i8_avx2_unchecked(user, q, out) }
    }

    /// The body of [`raw_u8_i8_avx2`].
    ///
    /// # Safety
    ///
    /// The CPU supports AVX2, and `q.len() >= out.len() * user.len()` (row `i` is
    /// read from `q[i * f..(i + 1) * f]`, in whole 32-byte chunks: a width that is
    /// not a multiple of 32 leaves its tail unread, which is wrong but not unsound).
    #[target_feature(enable = "avx2")]
    unsafe fn raw_u8_i8_avx2_unchecked(user: &[u8], q: &[i8], out: &mut [i32]) {
        let f = user.len();
        let chunks = f / 32;
        let u = user.as_ptr();
        let n = out.len();
        let ones = _mm256_set1_epi16(1);
        let step = |acc: __m256i, x: __m256i, y: __m256i| {
            _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), ones))
        };
        // SAFETY: (the caller's contract) every load is of 32 bytes at user[c * 32..]
        // or q[i * f + c * 32..] with c < f / 32 and i < n, so inside `user` and
        // inside q[..n * f]; every write is to out[i] with i < n.
        unsafe {
            let mut i = 0;
            while i + 4 <= n {
                let p = q.as_ptr().add(i * f);
                let (mut a0, mut a1, mut a2, mut a3) = (
                    _mm256_setzero_si256(),
                    _mm256_setzero_si256(),
                    _mm256_setzero_si256(),
                    _mm256_setzero_si256(),
                );
                for c in 0..chunks {
                    let x = _mm256_loadu_si256(u.add(c * 32) as *const __m256i);
                    a0 = step(a0, x, _mm256_loadu_si256(p.add(c * 32).cast()));
                    a1 = step(a1, x, _mm256_loadu_si256(p.add(f + c * 32).cast()));
                    a2 = step(a2, x, _mm256_loadu_si256(p.add(2 * f + c * 32).cast()));
                    a3 = step(a3, x, _mm256_loadu_si256(p.add(3 * f + c * 32).cast()));
                }
                *out.get_unchecked_mut(i) = hsum256_epi32(a0);
                *out.get_unchecked_mut(i + 1) = hsum256_epi32(a1);
                *out.get_unchecked_mut(i + 2) = hsum256_epi32(a2);
                *out.get_unchecked_mut(i + 3) = hsum256_epi32(a3);
                i += 4;
            }
            while i < n {
                let p = q.as_ptr().add(i * f);
                let mut a = _mm256_setzero_si256();
                for c in 0..chunks {
                    let x = _mm256_loadu_si256(u.add(c * 32) as *const __m256i);
                    a = step(a, x, _mm256_loadu_si256(p.add(c * 32).cast()));
                }
                *out.get_unchecked_mut(i) = hsum256_epi32(a);
                i += 1;
            }
        }
    }

    /// The sum of the eight lanes. A safe `#[target_feature]` function: the AVX2
    /// kernels above call it without `unsafe` and it is inlined into them.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn hsum256_epi32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// `out[i] = user · items[i]` with AVX-512, for the `out.len()` rows of
    /// `user.len()` values at the start of `items`.
    ///
    /// # Panics
    ///
    /// If `user.len()` is not a multiple of 16 or `items` holds fewer than
    /// `out.len()` rows.
    pub(super) fn scores_avx512(_: Avx512, user: &[f32], items: &[f32], out: &mut [f32]) {
        let f = user.len();
        assert!(f.is_multiple_of(16), "the user width is a multiple of 16");
        assert!(items.len() >= out.len() * f, "items hold out.len() rows");
        // SAFETY: the token proves AVX-512F; the bounds were checked just above.
        unsafe { scores_avx512_unchecked(user, items, out) }
    }

    /// The body of [`scores_avx512`].
    ///
    /// # Safety
    ///
    /// The CPU supports AVX-512F, and `items.len() >= out.len() * user.len()` (row
    /// `i` is read from `items[i * f..(i + 1) * f]` in whole 16-lane chunks).
    #[target_feature(enable = "avx512f")]
    unsafe fn scores_avx512_unchecked(user: &[f32], items: &[f32], out: &mut [f32]) {
        let f = user.len();
        let chunks = f / 16;
        let u = user.as_ptr();
        let n = out.len();
        // SAFETY: (the caller's contract) every load is of 16 lanes at user[c * 16..]
        // or items[i * f + c * 16..] (+ 16 for the second accumulator) with the
        // chunk inside f / 16 and i < n, so inside `user` and items[..n * f]; every
        // write is to out[i] with i < n.
        unsafe {
            let mut i = 0;
            while i + 4 <= n {
                let p = items.as_ptr().add(i * f);
                let (mut a0, mut a1, mut a2, mut a3) = (
                    _mm512_setzero_ps(),
                    _mm512_setzero_ps(),
                    _mm512_setzero_ps(),
                    _mm512_setzero_ps(),
                );
                let (mut b0, mut b1, mut b2, mut b3) = (a0, a1, a2, a3);
                let mut c = 0;
                while c + 2 <= chunks {
                    let x = _mm512_loadu_ps(u.add(c * 16));
                    let y = _mm512_loadu_ps(u.add(c * 16 + 16));
                    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(c * 16)), x, a0);
                    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(f + c * 16)), x, a1);
                    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(2 * f + c * 16)), x, a2);
                    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(3 * f + c * 16)), x, a3);
                    b0 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(c * 16 + 16)), y, b0);
                    b1 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(f + c * 16 + 16)), y, b1);
                    b2 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(2 * f + c * 16 + 16)), y, b2);
                    b3 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(3 * f + c * 16 + 16)), y, b3);
                    c += 2;
                }
                if c < chunks {
                    let x = _mm512_loadu_ps(u.add(c * 16));
                    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(c * 16)), x, a0);
                    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(f + c * 16)), x, a1);
                    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(2 * f + c * 16)), x, a2);
                    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(3 * f + c * 16)), x, a3);
                }
                *out.get_unchecked_mut(i) = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
                *out.get_unchecked_mut(i + 1) = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
                *out.get_unchecked_mut(i + 2) = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
                *out.get_unchecked_mut(i + 3) = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
                i += 4;
            }
            // The same two-accumulator order as above: a row's score does not depend
            // on whether it was scored in a group of four.
            while i < n {
                let p = items.as_ptr().add(i * f);
                let (mut a, mut b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                let mut c = 0;
                while c + 2 <= chunks {
                    a = _mm512_fmadd_ps(
                        _mm512_loadu_ps(p.add(c * 16)),
                        _mm512_loadu_ps(u.add(c * 16)),
                        a,
                    );
                    b = _mm512_fmadd_ps(
                        _mm512_loadu_ps(p.add(c * 16 + 16)),
                        _mm512_loadu_ps(u.add(c * 16 + 16)),
                        b,
                    );
                    c += 2;
                }
                if c < chunks {
                    a = _mm512_fmadd_ps(
                        _mm512_loadu_ps(p.add(c * 16)),
                        _mm512_loadu_ps(u.add(c * 16)),
                        a,
                    );
                }
                *out.get_unchecked_mut(i) = _mm512_reduce_add_ps(_mm512_add_ps(a, b));
                i += 1;
            }
        }
    }

    /// The sum of the eight lanes (as [`hsum256_epi32`], a safe `#[target_feature]`
    /// function inlined into the AVX2 kernel).
    #[target_feature(enable = "avx")]
    #[inline]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// `out[i] = user · items[i]` with AVX2 and FMA, for the `out.len()` rows of
    /// `user.len()` values at the start of `items`.
    ///
    /// # Panics
    ///
    /// If `user.len()` is not a multiple of 8 or `items` holds fewer than
    /// `out.len()` rows.
    pub(super) fn scores_avx2(_: Avx2Fma, user: &[f32], items: &[f32], out: &mut [f32]) {
        let f = user.len();
        assert!(f.is_multiple_of(8), "the user width is a multiple of 8");
        assert!(items.len() >= out.len() * f, "items hold out.len() rows");
        // SAFETY: the token proves AVX2 and FMA; the bounds were checked just above.
        unsafe { scores_avx2_unchecked(user, items, out) }
    }

    /// The body of [`scores_avx2`].
    ///
    /// # Safety
    ///
    /// The CPU supports AVX2 and FMA, and `items.len() >= out.len() * user.len()`
    /// (row `i` is read from `items[i * f..(i + 1) * f]` in whole 8-lane chunks).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn scores_avx2_unchecked(user: &[f32], items: &[f32], out: &mut [f32]) {
        let f = user.len();
        let chunks = f / 8;
        let u = user.as_ptr();
        let n = out.len();
        // SAFETY: (the caller's contract) every load is of 8 lanes at user[c * 8..]
        // or items[i * f + c * 8..] (+ 8 for the second accumulator) with the
        // chunk inside f / 8 and i < n, so inside `user` and items[..n * f]; every
        // write is to out[i] with i < n.
        unsafe {
            let mut i = 0;
            while i + 4 <= n {
                let p = items.as_ptr().add(i * f);
                let (mut a0, mut a1, mut a2, mut a3) = (
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                );
                let (mut b0, mut b1, mut b2, mut b3) = (a0, a1, a2, a3);
                let mut c = 0;
                while c + 2 <= chunks {
                    let x = _mm256_loadu_ps(u.add(c * 8));
                    let y = _mm256_loadu_ps(u.add(c * 8 + 8));
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(c * 8)), x, a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(f + c * 8)), x, a1);
                    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(2 * f + c * 8)), x, a2);
                    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(3 * f + c * 8)), x, a3);
                    b0 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(c * 8 + 8)), y, b0);
                    b1 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(f + c * 8 + 8)), y, b1);
                    b2 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(2 * f + c * 8 + 8)), y, b2);
                    b3 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(3 * f + c * 8 + 8)), y, b3);
                    c += 2;
                }
                if c < chunks {
                    let x = _mm256_loadu_ps(u.add(c * 8));
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(c * 8)), x, a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(f + c * 8)), x, a1);
                    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(2 * f + c * 8)), x, a2);
                    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(3 * f + c * 8)), x, a3);
                }
                *out.get_unchecked_mut(i) = hsum256(_mm256_add_ps(a0, b0));
                *out.get_unchecked_mut(i + 1) = hsum256(_mm256_add_ps(a1, b1));
                *out.get_unchecked_mut(i + 2) = hsum256(_mm256_add_ps(a2, b2));
                *out.get_unchecked_mut(i + 3) = hsum256(_mm256_add_ps(a3, b3));
                i += 4;
            }
            while i < n {
                let p = items.as_ptr().add(i * f);
                let (mut a, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                let mut c = 0;
                while c + 2 <= chunks {
                    a = _mm256_fmadd_ps(
                        _mm256_loadu_ps(p.add(c * 8)),
                        _mm256_loadu_ps(u.add(c * 8)),
                        a,
                    );
                    b = _mm256_fmadd_ps(
                        _mm256_loadu_ps(p.add(c * 8 + 8)),
                        _mm256_loadu_ps(u.add(c * 8 + 8)),
                        b,
                    );
                    c += 2;
                }
                if c < chunks {
                    a = _mm256_fmadd_ps(
                        _mm256_loadu_ps(p.add(c * 8)),
                        _mm256_loadu_ps(u.add(c * 8)),
                        a,
                    );
                }
                *out.get_unchecked_mut(i) = hsum256(_mm256_add_ps(a, b));
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantized_scores_are_within_their_bound() {
        for f in [8, 16, 24, 64, 128] {
            let n = 9;
            let items: Vec<f32> = (0..n * f)
                .map(|i| ((i * 31 % 23) as f32) / 23.0 - 0.5)
                .collect();
            let user: Vec<f32> = (0..f).map(|i| ((i * 5 % 11) as f32) / 11.0 - 0.3).collect();
            let qi = QuantizedItems::new(&items, f);
            let qu = QuantizedUser::new(&user).expect("quantizes");
            let l1: f32 = user.iter().map(|v| v.abs()).sum();
            for simd in [Simd::Avx512, Simd::Avx2, Simd::Portable] {
                let mut raw = vec![0i32; n];
                qi.raw_scores(simd, &qu, 0, &mut raw);
                for (i, row) in items.chunks_exact(f).enumerate() {
                    let exact: f64 = row.iter().zip(&user).map(|(a, b)| f64::from(a * b)).sum();
                    let s = f64::from(qi.scales()[i]);
                    let approx = f64::from(raw[i]) * s * f64::from(qu.scale());
                    // item rounding (s/2 per |u_j|) plus user rounding (|q| <= 127, su/2 each)
                    let bound =
                        s * (0.5 * f64::from(l1) + 127.0 * f as f64 * f64::from(qu.scale()) / 2.0);
                    assert!(
                        (approx - exact).abs() <= bound * 1.0001 + 1e-9,
                        "{simd:?} f={f} row {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn integer_scores_are_the_same_in_every_flavour_and_do_not_overflow() {
        // Extreme values up to the widest allowed vector.
        for f in [16, 32, 48, 128, 512, QuantizedUser::MAX_FACTORS] {
            let n = 7;
            let items: Vec<f32> = (0..n * f)
                .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
                .collect();
            let user: Vec<f32> = (0..f)
                .map(|j| if j % 2 == 0 { 2.5 } else { -2.5 })
                .collect();
            let same_sign: Vec<f32> = vec![1.0; f];
            let mixed: Vec<f32> = (0..f)
                .map(|j| ((j * 37 % 101) as f32) / 50.0 - 1.0)
                .collect();
            let qi = QuantizedItems::new(&items, f);
            for u in [&user, &same_sign, &mixed] {
                let qu = QuantizedUser::new(u).expect("quantizes");
                let mut want = vec![0i32; n];
                qi.raw_scores(Simd::Portable, &qu, 0, &mut want);
                let wide: Vec<i64> = items
                    .chunks_exact(f)
                    .map(|row| {
                        row.iter()
                            .zip(u.iter())
                            .map(|(a, b)| ((a * 127.0) as i64) * ((b / qu.scale()).round() as i64))
                            .sum()
                    })
                    .collect();
                assert_eq!(
                    want.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(),
                    wide,
                    "f={f}"
                );
                for simd in [Simd::Avx512, Simd::Avx2] {
                    let mut got = vec![0i32; n];
                    qi.raw_scores(simd, &qu, 0, &mut got);
                    assert_eq!(got, want, "{simd:?} f={f}");
                }
            }
        }
        assert!(QuantizedUser::new(&vec![1.0; QuantizedUser::MAX_FACTORS + 1]).is_none());
        assert!(QuantizedUser::new(&[1.0, f32::NAN]).is_none());
        let widest = QuantizedUser::MAX_FACTORS as i64;
        assert!(
            127 * 127 * widest <= i64::from(i32::MAX),
            "biased sums fit int32"
        );
        assert!(127 * 63 * widest < 1 << 24, "sums convert to f32 exactly");
    }

    #[test]
    fn a_row_scores_the_same_alone_or_in_a_group() {
        let f = 48;
        let items: Vec<f32> = (0..5 * f)
            .map(|i| ((i * 13 % 29) as f32) / 29.0 - 0.5)
            .collect();
        let user: Vec<f32> = (0..f).map(|i| ((i * 3 % 7) as f32) / 7.0 - 0.5).collect();
        for simd in [Simd::Avx512, Simd::Avx2, Simd::Portable] {
            let mut all = vec![0f32; 5];
            scores_with(simd, &user, &items, &mut all);
            for i in 0..5 {
                let mut one = [0f32];
                scores_with(simd, &user, &items[i * f..], &mut one);
                assert_eq!(one[0].to_bits(), all[i].to_bits(), "{simd:?} row {i}");
            }
        }
    }

    #[test]
    fn every_flavour_matches_the_naive_dot() {
        for f in [1, 7, 8, 16, 24, 32, 64, 72, 128] {
            for n in [0, 1, 3, 4, 5, 9] {
                let user: Vec<f32> = (0..f).map(|i| ((i * 7 % 13) as f32) / 13.0 - 0.4).collect();
                let items: Vec<f32> = (0..n * f)
                    .map(|i| ((i * 11 % 17) as f32) / 17.0 - 0.5)
                    .collect();
                let naive: Vec<f64> = items
                    .chunks_exact(f)
                    .map(|it| it.iter().zip(&user).map(|(a, b)| f64::from(a * b)).sum())
                    .collect();
                for simd in [Simd::Avx512, Simd::Avx2, Simd::Portable] {
                    let mut out = vec![0f32; n];
                    scores_with(simd, &user, &items, &mut out);
                    for (o, w) in out.iter().zip(&naive) {
                        assert!((f64::from(*o) - w).abs() < 1e-4, "{simd:?} f={f} n={n}");
                    }
                }
            }
        }
    }
}
