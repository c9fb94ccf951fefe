//! The per-row conjugate-gradient solve with the row vectors held in SIMD registers:
//! `[V; K]` arrays of lanes, f = K * V::W factors. AVX-512 (16 lanes) and AVX2+FMA
//! (8 lanes) are compiled behind `#[target_feature]` and chosen at run time; the
//! portable 8-lane version is plain Rust the compiler vectorises for the baseline
//! target. Factor counts that are not a multiple of the lane width (or above 16
//! lanes) go to the slice version in `als.rs`. The arithmetic is the same as that
//! version and as implicit's `_least_squares_cg`; only the summation order differs.

type Csr = recs_core::Csr<f32>;

/// The per-row problem shared by every task of one half-iteration.
pub(crate) struct Problem<'a> {
    /// Y'Y + lambda I, f x f, f32.
    pub(crate) g: &'a [f32],
    pub(crate) y: &'a [f32],
    pub(crate) m: &'a Csr,
    pub(crate) f: usize,
    pub(crate) cg_steps: usize,
    /// Per-row regularisation on top of the lambda inside `g`.
    pub(crate) extra_reg: Option<&'a [f32]>,
}

/// The SIMD flavour of the row kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Off x86_64 (aarch64: the Lambda build) only Portable is ever picked.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum Simd {
    Avx512,
    Avx2,
    Portable,
}

impl Simd {
    /// The best the CPU supports; `RECS_SIMD=portable|avx2|avx512` caps it.
    pub(crate) fn detect() -> Simd {
        let cap = std::env::var("RECS_SIMD").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let avx512 = avx2 && is_x86_feature_detected!("avx512f");
            match cap.as_str() {
                "portable" => Simd::Portable,
                "avx2" if avx2 => Simd::Avx2,
                _ if avx512 && cap != "avx2" => Simd::Avx512,
                _ if avx2 => Simd::Avx2,
                _ => Simd::Portable,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = cap;
            Simd::Portable
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Simd::Avx512 => "avx512",
            Simd::Avx2 => "avx2+fma",
            Simd::Portable => "portable",
        }
    }
}

/// A SIMD vector of `W` f32 lanes.
pub(super) trait Lane: Copy {
    const W: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// a * b + c
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    unsafe fn hsum(self) -> f32;
}

/// Eight lanes in plain Rust (`a * b + c`, not fused).
#[derive(Clone, Copy)]
pub(super) struct Portable([f32; 8]);

impl Lane for Portable {
    const W: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 8])
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable([v; 8])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Portable(std::ptr::read_unaligned(p as *const [f32; 8]))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p as *mut [f32; 8], self.0)
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        let mut o = c.0;
        for (l, v) in o.iter_mut().enumerate() {
            *v += a.0[l] * b.0[l];
        }
        Portable(o)
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        let mut o = a.0;
        for (v, w) in o.iter_mut().zip(b.0) {
            *v += w;
        }
        Portable(o)
    }
    #[inline(always)]
    unsafe fn hsum(self) -> f32 {
        let v = self.0;
        ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lane;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256);

    impl Lane for Avx2 {
        const W: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx2(_mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx2(_mm256_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            Avx2(_mm256_fmadd_ps(a.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            Avx2(_mm256_add_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            let lo = _mm256_castps256_ps128(self.0);
            let hi = _mm256_extractf128_ps(self.0, 1);
            let s = _mm_add_ps(lo, hi);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    }

    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    impl Lane for Avx512 {
        const W: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Avx512(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx512(_mm512_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            Avx512(_mm512_fmadd_ps(a.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            Avx512(_mm512_add_ps(a.0, b.0))
        }
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            _mm512_reduce_add_ps(self.0)
        }
    }
}

#[inline(always)]
unsafe fn load_row<V: Lane, const K: usize>(p: *const f32) -> [V; K] {
    let mut out = [V::zero(); K];
    for (k, o) in out.iter_mut().enumerate() {
        *o = V::load(p.add(k * V::W));
    }
    out
}

#[inline(always)]
unsafe fn store_row<V: Lane, const K: usize>(v: &[V; K], p: *mut f32) {
    for (k, o) in v.iter().enumerate() {
        o.store(p.add(k * V::W));
    }
}

#[inline(always)]
unsafe fn dot<V: Lane, const K: usize>(a: &[V; K], b: &[V; K]) -> f32 {
    let mut acc = V::zero();
    for k in 0..K {
        acc = V::fma(a[k], b[k], acc);
    }
    acc.hsum()
}

/// y += a x
#[inline(always)]
unsafe fn axpy<V: Lane, const K: usize>(a: f32, x: &[V; K], y: &mut [V; K]) {
    let s = V::splat(a);
    for k in 0..K {
        y[k] = V::fma(s, x[k], y[k]);
    }
}

/// G v for the symmetric f x f matrix at `g`, with two interleaved accumulator sets
/// (even and odd rows of G) to keep the FMA units busy.
#[inline(always)]
unsafe fn symv<V: Lane, const K: usize>(g: *const f32, v: &[V; K]) -> [V; K] {
    let f = K * V::W;
    let mut vs = [0f32; 256];
    store_row(v, vs.as_mut_ptr());
    let mut a0 = [V::zero(); K];
    let mut a1 = [V::zero(); K];
    let mut j = 0;
    while j < f {
        let (s0, s1) = (V::splat(vs[j]), V::splat(vs[j + 1]));
        let (g0, g1) = (g.add(j * f), g.add((j + 1) * f));
        for k in 0..K {
            a0[k] = V::fma(s0, V::load(g0.add(k * V::W)), a0[k]);
            a1[k] = V::fma(s1, V::load(g1.add(k * V::W)), a1[k]);
        }
        j += 2;
    }
    for k in 0..K {
        a0[k] = V::add(a0[k], a1[k]);
    }
    a0
}

/// Solves rows `row0..` into `xs` (see `als::solve_one` for the steps).
#[inline(always)]
pub(super) unsafe fn solve_rows<V: Lane, const K: usize>(p: &Problem, row0: usize, xs: &mut [f32]) {
    let f = K * V::W;
    debug_assert_eq!(p.f, f);
    debug_assert!(f <= 256 && p.g.len() == f * f && p.y.len() == p.m.cols * f);
    let g = p.g.as_ptr();
    let y = p.y.as_ptr();
    for (j, xrow) in xs.chunks_exact_mut(f).enumerate() {
        let row = row0 + j;
        let (s, e) = (p.m.indptr[row], p.m.indptr[row + 1]);
        if s == e {
            xrow.fill(0.0);
            continue;
        }
        let idx = &p.m.indices[s..e];
        let conf = &p.m.data[s..e];
        let weighted = conf.iter().any(|&c| c.abs() != 1.0);
        let mut x: [V; K] = load_row(xrow.as_ptr());

        // r = b - A x; G v of -x is exactly -(G x).
        let mut neg = x;
        for v in neg.iter_mut() {
            *v = V::fma(V::splat(-1.0), *v, V::zero());
        }
        let extra = p.extra_reg.map_or(0.0, |e| e[row]);
        let mut r = symv(g, &neg);
        if extra != 0.0 {
            axpy(-extra, &x, &mut r);
        }
        for (&i, &c) in idx.iter().zip(conf) {
            let yi: [V; K] = load_row(y.add(i as usize * f));
            let (c_pos, c_abs) = if c > 0.0 { (c, c) } else { (0.0, -c) };
            let w = c_abs - 1.0;
            let t = if w != 0.0 {
                c_pos - w * dot(&yi, &x)
            } else {
                c_pos
            };
            axpy(t, &yi, &mut r);
        }
        let mut d = r;
        let mut rs_old = dot(&r, &r);
        if rs_old < 1e-20 {
            continue;
        }
        for _ in 0..p.cg_steps {
            let mut ad = symv(g, &d);
            if extra != 0.0 {
                axpy(extra, &d, &mut ad);
            }
            if weighted {
                for (&i, &c) in idx.iter().zip(conf) {
                    let w = c.abs() - 1.0;
                    if w != 0.0 {
                        let yi: [V; K] = load_row(y.add(i as usize * f));
                        axpy(w * dot(&yi, &d), &yi, &mut ad);
                    }
                }
            }
            let a = rs_old / dot(&d, &ad);
            axpy(a, &d, &mut x);
            axpy(-a, &ad, &mut r);
            let rs_new = dot(&r, &r);
            if rs_new < 1e-20 {
                break;
            }
            let beta = V::splat(rs_new / rs_old);
            for k in 0..K {
                d[k] = V::fma(beta, d[k], r[k]);
            }
            rs_old = rs_new;
        }
        store_row(&x, xrow.as_mut_ptr());
    }
}

/// g += sum of y y' over the rows of `y` (f x f, row-major), four rows at a time.
#[inline(always)]
pub(super) unsafe fn gram_update<V: Lane, const K: usize>(y: &[f32], g: &mut [f32]) {
    let f = K * V::W;
    debug_assert!(g.len() == f * f && y.len().is_multiple_of(f));
    let n = y.len() / f;
    let yp = y.as_ptr();
    let gp = g.as_mut_ptr();
    let mut r = 0;
    while r + 4 <= n {
        let rows: [[V; K]; 4] = [
            load_row(yp.add(r * f)),
            load_row(yp.add((r + 1) * f)),
            load_row(yp.add((r + 2) * f)),
            load_row(yp.add((r + 3) * f)),
        ];
        for j in 0..f {
            let gj_ptr = gp.add(j * f);
            let mut gj: [V; K] = load_row(gj_ptr);
            for (q, row) in rows.iter().enumerate() {
                let s = V::splat(*yp.add((r + q) * f + j));
                for k in 0..K {
                    gj[k] = V::fma(s, row[k], gj[k]);
                }
            }
            store_row(&gj, gj_ptr);
        }
        r += 4;
    }
    while r < n {
        let row: [V; K] = load_row(yp.add(r * f));
        for j in 0..f {
            let gj_ptr = gp.add(j * f);
            let mut gj: [V; K] = load_row(gj_ptr);
            axpy(*yp.add(r * f + j), &row, &mut gj);
            store_row(&gj, gj_ptr);
        }
        r += 1;
    }
}

type RowsFn = unsafe fn(&Problem, usize, &mut [f32]);
type GramFn = unsafe fn(&[f32], &mut [f32]);

macro_rules! pick_k {
    ($func:ident, $t:ty, $k:expr) => {
        match $k {
            1 => Some($func::<1> as $t),
            2 => Some($func::<2> as $t),
            3 => Some($func::<3> as $t),
            4 => Some($func::<4> as $t),
            5 => Some($func::<5> as $t),
            6 => Some($func::<6> as $t),
            7 => Some($func::<7> as $t),
            8 => Some($func::<8> as $t),
            9 => Some($func::<9> as $t),
            10 => Some($func::<10> as $t),
            11 => Some($func::<11> as $t),
            12 => Some($func::<12> as $t),
            13 => Some($func::<13> as $t),
            14 => Some($func::<14> as $t),
            15 => Some($func::<15> as $t),
            16 => Some($func::<16> as $t),
            _ => None,
        }
    };
}

unsafe fn gram_portable<const K: usize>(y: &[f32], g: &mut [f32]) {
    gram_update::<Portable, K>(y, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gram_avx2<const K: usize>(y: &[f32], g: &mut [f32]) {
    gram_update::<x86::Avx2, K>(y, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gram_avx512<const K: usize>(y: &[f32], g: &mut [f32]) {
    gram_update::<x86::Avx512, K>(y, g)
}

unsafe fn rows_portable<const K: usize>(p: &Problem, row0: usize, xs: &mut [f32]) {
    solve_rows::<Portable, K>(p, row0, xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<const K: usize>(p: &Problem, row0: usize, xs: &mut [f32]) {
    solve_rows::<x86::Avx2, K>(p, row0, xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_avx512<const K: usize>(p: &Problem, row0: usize, xs: &mut [f32]) {
    solve_rows::<x86::Avx512, K>(p, row0, xs)
}

fn fits(f: usize, w: usize) -> bool {
    f > 0 && f.is_multiple_of(w) && f / w <= 16
}

/// The register kernel for `f` factors on `simd`, if there is one.
pub(super) fn kernel_for(simd: Simd, f: usize) -> Option<RowsFn> {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 if fits(f, 16) => pick_k!(rows_avx512, RowsFn, f / 16),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 | Simd::Avx2 if fits(f, 8) => pick_k!(rows_avx2, RowsFn, f / 8),
        _ if fits(f, 8) => pick_k!(rows_portable, RowsFn, f / 8),
        _ => None,
    }
}

/// The Y'Y accumulation kernel for `f` factors on `simd`, if there is one.
pub(super) fn gram_kernel_for(simd: Simd, f: usize) -> Option<GramFn> {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 if fits(f, 16) => pick_k!(gram_avx512, GramFn, f / 16),
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 | Simd::Avx2 if fits(f, 8) => pick_k!(gram_avx2, GramFn, f / 8),
        _ if fits(f, 8) => pick_k!(gram_portable, GramFn, f / 8),
        _ => None,
    }
}
