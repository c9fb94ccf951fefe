//! The per-row conjugate-gradient solve with the row vectors held in SIMD registers:
//! `[V; K]` arrays of lanes, f = K * V::W factors. AVX-512 (16 lanes) and AVX2+FMA
//! (8 lanes) are compiled behind `#[target_feature]` and chosen at run time; the
//! portable 8-lane version is plain Rust the compiler vectorises for the baseline
//! target. Factor counts that are not a multiple of the lane width (or above 16
//! lanes) go to the slice version in `als.rs`. The arithmetic is the same as that
//! version and as implicit's `_least_squares_cg`; only the summation order differs.
//!
//! Safety: the kernels are `unsafe fn`s private to this module, reachable only
//! through [`Kernel`], which is built only with recs-core's token for the
//! kernel's features ([`recs_core::Avx2Fma`], [`recs_core::Avx512`]) and checks
//! every bound the kernels rely on once per call, before entering them.

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

/// The kernel flavour: recs-core's one CPU-feature detection (and `RECS_SIMD` rule).
pub(crate) use recs_core::Simd;

/// A SIMD vector of `W` f32 lanes. Every method is `unsafe` because the x86 lane
/// types run instructions the CPU may lack: their callers (the generic kernels
/// below, and through them [`Kernel`]) guarantee the CPU has them.
pub(super) trait Lane: Copy {
    /// The lane count.
    const W: usize;

    /// All lanes 0.
    ///
    /// # Safety
    ///
    /// The CPU supports the lane type's instructions (AVX2 and FMA for
    /// `x86::Avx2`, AVX-512F for `x86::Avx512`, none for [`Portable`]).
    unsafe fn zero() -> Self;

    /// All lanes `v`.
    ///
    /// # Safety
    ///
    /// The CPU supports the lane type's instructions (as [`Lane::zero`]).
    unsafe fn splat(v: f32) -> Self;

    /// `W` values read from `p`.
    ///
    /// # Safety
    ///
    /// The CPU supports the lane type's instructions (as [`Lane::zero`]), and `p`
    /// is valid for reading `W` consecutive f32 (any alignment).
    unsafe fn load(p: *const f32) -> Self;

    /// The `W` lanes written to `p`.
    ///
    /// # Safety
    ///
    /// The CPU supports the lane type's instructions (as [`Lane::zero`]), and `p`
    /// is valid for writing `W` consecutive f32 (any alignment).
    unsafe fn store(self, p: *mut f32);

    /// a * b + c
    ///
    /// # Safety
    ///
    /// The CPU supports the lane type's instructions (as [`Lane::zero`]).
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;

    /// a + b
    ///
    /// # Safety
    ///
    /// The CPU supports the lane type's instructions (as [`Lane::zero`]).
    unsafe fn add(a: Self, b: Self) -> Self;

    /// The sum of the lanes.
    ///
    /// # Safety
    ///
    /// The CPU supports the lane type's instructions (as [`Lane::zero`]).
    unsafe fn hsum(self) -> f32;
}

/// Eight lanes in plain Rust (`a * b + c`, not fused).
#[derive(Clone, Copy)]
pub(super) struct Portable([f32; 8]);

impl Lane for Portable {
    const W: usize = 8;
    /// # Safety
    ///
    /// None: plain Rust (`unsafe` only because the trait is).
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; 8])
    }
    /// # Safety
    ///
    /// None: plain Rust (`unsafe` only because the trait is).
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable([v; 8])
    }
    /// # Safety
    ///
    /// `p` is valid for reading 8 consecutive f32 (any alignment).
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 8 readable f32 at `p`; read_unaligned needs
        // no alignment.
        Portable(unsafe { std::ptr::read_unaligned(p as *const [f32; 8]) })
    }
    /// # Safety
    ///
    /// `p` is valid for writing 8 consecutive f32 (any alignment).
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 8 writable f32 at `p`; write_unaligned needs
        // no alignment.
        unsafe { std::ptr::write_unaligned(p as *mut [f32; 8], self.0) }
    }
    /// # Safety
    ///
    /// None: plain Rust (`unsafe` only because the trait is).
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        let mut o = c.0;
        for (l, v) in o.iter_mut().enumerate() {
            *v += a.0[l] * b.0[l];
        }
        Portable(o)
    }
    /// # Safety
    ///
    /// None: plain Rust (`unsafe` only because the trait is).
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        let mut o = a.0;
        for (v, w) in o.iter_mut().zip(b.0) {
            *v += w;
        }
        Portable(o)
    }
    /// # Safety
    ///
    /// None: plain Rust (`unsafe` only because the trait is).
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

    /// Eight lanes in a `__m256`, with fused multiply-adds.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256);

    impl Lane for Avx2 {
        const W: usize = 8;
        /// # Safety
        ///
        /// The CPU supports AVX2 and FMA.
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller guarantees AVX2 (and so AVX).
            Avx2(unsafe { _mm256_setzero_ps() })
        }
        /// # Safety
        ///
        /// The CPU supports AVX2 and FMA.
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: the caller guarantees AVX2 (and so AVX).
            Avx2(unsafe { _mm256_set1_ps(v) })
        }
        /// # Safety
        ///
        /// The CPU supports AVX2 and FMA, and `p` is valid for reading 8
        /// consecutive f32 (any alignment).
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller guarantees AVX and 8 readable f32 at `p`; loadu
            // needs no alignment.
            Avx2(unsafe { _mm256_loadu_ps(p) })
        }
        /// # Safety
        ///
        /// The CPU supports AVX2 and FMA, and `p` is valid for writing 8
        /// consecutive f32 (any alignment).
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: the caller guarantees AVX and 8 writable f32 at `p`; storeu
            // needs no alignment.
            unsafe { _mm256_storeu_ps(p, self.0) }
        }
        /// # Safety
        ///
        /// The CPU supports AVX2 and FMA.
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: the caller guarantees FMA.
            Avx2(unsafe { _mm256_fmadd_ps(a.0, b.0, c.0) })
        }
        /// # Safety
        ///
        /// The CPU supports AVX2 and FMA.
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: the caller guarantees AVX2 (and so AVX).
            Avx2(unsafe { _mm256_add_ps(a.0, b.0) })
        }
        /// # Safety
        ///
        /// The CPU supports AVX2 and FMA.
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            // SAFETY: the caller guarantees AVX2 (and so AVX and SSE).
            unsafe {
                let lo = _mm256_castps256_ps128(self.0);
                let hi = _mm256_extractf128_ps(self.0, 1);
                let s = _mm_add_ps(lo, hi);
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
                _mm_cvtss_f32(s)
            }
        }
    }

    /// Sixteen lanes in a `__m512`.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    impl Lane for Avx512 {
        const W: usize = 16;
        /// # Safety
        ///
        /// The CPU supports AVX-512F.
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller guarantees AVX-512F.
            Avx512(unsafe { _mm512_setzero_ps() })
        }
        /// # Safety
        ///
        /// The CPU supports AVX-512F.
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: the caller guarantees AVX-512F.
            Avx512(unsafe { _mm512_set1_ps(v) })
        }
        /// # Safety
        ///
        /// The CPU supports AVX-512F, and `p` is valid for reading 16 consecutive
        /// f32 (any alignment).
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller guarantees AVX-512F and 16 readable f32 at `p`;
            // loadu needs no alignment.
            Avx512(unsafe { _mm512_loadu_ps(p) })
        }
        /// # Safety
        ///
        /// The CPU supports AVX-512F, and `p` is valid for writing 16 consecutive
        /// f32 (any alignment).
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: the caller guarantees AVX-512F and 16 writable f32 at `p`;
            // storeu needs no alignment.
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        /// # Safety
        ///
        /// The CPU supports AVX-512F.
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: the caller guarantees AVX-512F.
            Avx512(unsafe { _mm512_fmadd_ps(a.0, b.0, c.0) })
        }
        /// # Safety
        ///
        /// The CPU supports AVX-512F.
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: the caller guarantees AVX-512F.
            Avx512(unsafe { _mm512_add_ps(a.0, b.0) })
        }
        /// # Safety
        ///
        /// The CPU supports AVX-512F.
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            // SAFETY: the caller guarantees AVX-512F.
            unsafe { _mm512_reduce_add_ps(self.0) }
        }
    }
}

/// K lanes (K * V::W values) read from `p`.
///
/// # Safety
///
/// The CPU supports `V`'s instructions, and `p` is valid for reading `K * V::W`
/// consecutive f32 (any alignment).
#[inline(always)]
unsafe fn load_row<V: Lane, const K: usize>(p: *const f32) -> [V; K] {
    // SAFETY: V's instructions are there (the caller's contract); lane k reads
    // p[k * W..(k + 1) * W], inside the K * W readable values.
    unsafe {
        let mut out = [V::zero(); K];
        for (k, o) in out.iter_mut().enumerate() {
            *o = V::load(p.add(k * V::W));
        }
        out
    }
}

/// K lanes written to `p`.
///
/// # Safety
///
/// The CPU supports `V`'s instructions, and `p` is valid for writing `K * V::W`
/// consecutive f32 (any alignment).
#[inline(always)]
unsafe fn store_row<V: Lane, const K: usize>(v: &[V; K], p: *mut f32) {
    for (k, o) in v.iter().enumerate() {
        // SAFETY: V's instructions are there (the caller's contract); lane k
        // writes p[k * W..(k + 1) * W], inside the K * W writable values.
        unsafe { o.store(p.add(k * V::W)) };
    }
}

/// a · b
///
/// # Safety
///
/// The CPU supports `V`'s instructions.
#[inline(always)]
unsafe fn dot<V: Lane, const K: usize>(a: &[V; K], b: &[V; K]) -> f32 {
    // SAFETY: V's instructions are there (the caller's contract).
    unsafe {
        let mut acc = V::zero();
        for k in 0..K {
            acc = V::fma(a[k], b[k], acc);
        }
        acc.hsum()
    }
}

/// y += a x
///
/// # Safety
///
/// The CPU supports `V`'s instructions.
#[inline(always)]
unsafe fn axpy<V: Lane, const K: usize>(a: f32, x: &[V; K], y: &mut [V; K]) {
    // SAFETY: V's instructions are there (the caller's contract).
    unsafe {
        let s = V::splat(a);
        for k in 0..K {
            y[k] = V::fma(s, x[k], y[k]);
        }
    }
}

/// G v for the symmetric f x f matrix at `g` (f = K * V::W), with two interleaved
/// accumulator sets (even and odd rows of G) to keep the FMA units busy.
///
/// # Safety
///
/// The CPU supports `V`'s instructions, and `g` is valid for reading f * f
/// consecutive f32 (any alignment).
#[inline(always)]
unsafe fn symv<V: Lane, const K: usize>(g: *const f32, v: &[V; K]) -> [V; K] {
    // The row is spilled to a 256-value buffer, and rows are taken in pairs.
    const { assert!(K * V::W <= 256 && (K * V::W).is_multiple_of(2)) };
    let f = K * V::W;
    let mut vs = [0f32; 256];
    // SAFETY: V's instructions are there (the caller's contract); `vs` holds
    // f <= 256 values; rows j and j + 1 < f of g start at j * f and (j + 1) * f,
    // and lane k reads their values k * W..(k + 1) * W < f: all inside f * f.
    unsafe {
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
}

/// Solves rows `row0..row0 + xs.len() / f` into `xs` (f = K * V::W; see
/// `als::solve_one` for the steps).
///
/// # Safety
///
/// The CPU supports `V`'s instructions, `p.g` holds at least f * f values, and
/// every column index stored for those rows (`p.m.indices[p.m.indptr[row]..
/// p.m.indptr[row + 1]]`) is below `p.y.len() / f`: row i of `y` is read through a
/// raw pointer at `i * f`. Everything else (the row pointers, `data`, `extra_reg`,
/// `xs`) is read through bounds-checked slices. [`Kernel::solve_rows`] checks all
/// of it.
#[inline(always)]
pub(super) unsafe fn solve_rows<V: Lane, const K: usize>(p: &Problem, row0: usize, xs: &mut [f32]) {
    let f = K * V::W;
    let g = p.g.as_ptr();
    let y = p.y.as_ptr();
    // SAFETY: V's instructions are there and every `y` row read is of an index
    // below p.y.len() / f, and `g` holds f * f values (the caller's contract);
    // `xrow` holds f values (chunks_exact_mut).
    unsafe {
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
}

/// g += sum of y y' over the rows of `y` (f x f, row-major, f = K * V::W), four
/// rows at a time; a partial last row is ignored.
///
/// # Safety
///
/// The CPU supports `V`'s instructions, and `g` holds at least f * f values
/// ([`Kernel::gram`] checks it). The rows of `y` read are the `y.len() / f` whole
/// ones, always in bounds.
#[inline(always)]
pub(super) unsafe fn gram_update<V: Lane, const K: usize>(y: &[f32], g: &mut [f32]) {
    let f = K * V::W;
    let n = y.len() / f;
    let yp = y.as_ptr();
    let gp = g.as_mut_ptr();
    // SAFETY: V's instructions are there and g holds f * f values (the caller's
    // contract); rows r < n of y lie in y[..n * f], rows j < f of g in g[..f * f].
    unsafe {
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

/// [`gram_update`] on portable lanes.
///
/// # Safety
///
/// As [`gram_update`] with no CPU requirement: `g` holds at least f * f values
/// (f = 8 K).
unsafe fn gram_portable<const K: usize>(y: &[f32], g: &mut [f32]) {
    // SAFETY: portable lanes need no CPU feature; the caller guarantees `g`.
    unsafe { gram_update::<Portable, K>(y, g) }
}

/// [`gram_update`] compiled for AVX2+FMA.
///
/// # Safety
///
/// The CPU supports AVX2 and FMA, and `g` holds at least f * f values (f = 8 K).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gram_avx2<const K: usize>(y: &[f32], g: &mut [f32]) {
    // SAFETY: the caller guarantees AVX2+FMA (Avx2 lanes) and `g`.
    unsafe { gram_update::<x86::Avx2, K>(y, g) }
}

/// [`gram_update`] compiled for AVX-512.
///
/// # Safety
///
/// The CPU supports AVX-512F, AVX2 and FMA, and `g` holds at least f * f values
/// (f = 16 K).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gram_avx512<const K: usize>(y: &[f32], g: &mut [f32]) {
    // SAFETY: the caller guarantees AVX-512F (Avx512 lanes) and `g`.
    unsafe { gram_update::<x86::Avx512, K>(y, g) }
}

/// [`solve_rows`] on portable lanes.
///
/// # Safety
///
/// As [`solve_rows`] with no CPU requirement (f = 8 K).
unsafe fn rows_portable<const K: usize>(p: &Problem, row0: usize, xs: &mut [f32]) {
    // SAFETY: portable lanes need no CPU feature; the caller guarantees the bounds.
    unsafe { solve_rows::<Portable, K>(p, row0, xs) }
}

/// [`solve_rows`] compiled for AVX2+FMA.
///
/// # Safety
///
/// The CPU supports AVX2 and FMA, and the bounds of [`solve_rows`] hold (f = 8 K).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<const K: usize>(p: &Problem, row0: usize, xs: &mut [f32]) {
    // SAFETY: the caller guarantees AVX2+FMA (Avx2 lanes) and the bounds.
    unsafe { solve_rows::<x86::Avx2, K>(p, row0, xs) }
}

/// [`solve_rows`] compiled for AVX-512.
///
/// # Safety
///
/// The CPU supports AVX-512F, AVX2 and FMA, and the bounds of [`solve_rows`] hold
/// (f = 16 K).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows_avx512<const K: usize>(p: &Problem, row0: usize, xs: &mut [f32]) {
    // SAFETY: the caller guarantees AVX-512F (Avx512 lanes) and the bounds.
    unsafe { solve_rows::<x86::Avx512, K>(p, row0, xs) }
}

fn fits(f: usize, w: usize) -> bool {
    f > 0 && f.is_multiple_of(w) && f / w <= 16
}

/// The register kernels for one factor count: the row solve and the Y'Y
/// accumulation. Only [`Kernel::new`] makes one, and it picks the AVX2 or AVX-512
/// pair only with recs-core's token for those features in hand, so holding a
/// `Kernel` proves the CPU can run it; its methods check the bounds the kernels
/// rely on, once per call, and are safe.
#[derive(Clone, Copy)]
pub(super) struct Kernel {
    f: usize,
    rows: RowsFn,
    gram: GramFn,
}

impl Kernel {
    /// The kernels for `f` factors on `simd` (falling back to the next flavour down
    /// when the CPU lacks it), if there are any: `f` must be a multiple of the lane
    /// width and at most 16 lanes (so 8 to 128 in steps of 8 portable or AVX2, up
    /// to 256 in steps of 16 with AVX-512).
    pub(super) fn new(simd: Simd, f: usize) -> Option<Kernel> {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(k) = simd.avx512().and_then(|t| Kernel::avx512(t, f)) {
                return Some(k);
            }
            if let Some(k) = simd.avx2_fma().and_then(|t| Kernel::avx2(t, f)) {
                return Some(k);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = simd;
        Kernel::portable(f)
    }

    fn portable(f: usize) -> Option<Kernel> {
        if !fits(f, 8) {
            return None;
        }
        Some(Kernel {
            f,
            rows: pick_k!(rows_portable, RowsFn, f / 8)?,
            gram: pick_k!(gram_portable, GramFn, f / 8)?,
        })
    }

    /// The AVX2+FMA pair: the token is the proof the CPU has the features.
    #[cfg(target_arch = "x86_64")]
    fn avx2(_: recs_core::Avx2Fma, f: usize) -> Option<Kernel> {
        if !fits(f, 8) {
            return None;
        }
        Some(Kernel {
            f,
            rows: pick_k!(rows_avx2, RowsFn, f / 8)?,
            gram: pick_k!(gram_avx2, GramFn, f / 8)?,
        })
    }

    /// The AVX-512 pair: the token is the proof the CPU has the features.
    #[cfg(target_arch = "x86_64")]
    fn avx512(_: recs_core::Avx512, f: usize) -> Option<Kernel> {
        if !fits(f, 16) {
            return None;
        }
        Some(Kernel {
            f,
            rows: pick_k!(rows_avx512, RowsFn, f / 16)?,
            gram: pick_k!(gram_avx512, GramFn, f / 16)?,
        })
    }

    /// Solves rows `row0..row0 + xs.len() / f` into `xs` (see `als::solve_one`).
    ///
    /// # Panics
    ///
    /// If `p.f` is not this kernel's factor count, `p.g` is not f x f, `xs` does
    /// not hold whole rows, the rows are not in `p.m` or their row pointers
    /// decrease, or one of their column indices has no row in `p.y`. One pass over
    /// the rows' indices, outside the solve's loops.
    pub(super) fn solve_rows(&self, p: &Problem, row0: usize, xs: &mut [f32]) {
        let f = self.f;
        assert_eq!(p.f, f, "the problem's factor count is the kernel's");
        assert_eq!(p.g.len(), f * f, "g is f x f");
        assert!(xs.len().is_multiple_of(f), "xs holds whole rows");
        let ptr = &p.m.indptr[row0..=row0 + xs.len() / f];
        assert!(
            ptr.windows(2).all(|w| w[0] <= w[1]),
            "row pointers do not decrease"
        );
        let idx = &p.m.indices[ptr[0]..ptr[ptr.len() - 1]];
        let max = idx.iter().fold(0u32, |m, &i| m.max(i));
        assert!(
            idx.is_empty() || (max as usize) < p.y.len() / f,
            "every column index has a row in y"
        );
        // SAFETY: `self` holds kernels whose CPU features were proved by a token
        // (Kernel::new); the bounds solve_rows relies on were checked just above
        // (each row's indices lie inside the checked range, as its pointers do not
        // decrease).
        unsafe { (self.rows)(p, row0, xs) }
    }

    /// `g += Σ y yᵀ` over the rows of `y` (f x f, row-major).
    ///
    /// # Panics
    ///
    /// If `g` is not f x f or `y` does not hold whole rows.
    pub(super) fn gram(&self, y: &[f32], g: &mut [f32]) {
        let f = self.f;
        assert_eq!(g.len(), f * f, "g is f x f");
        assert!(y.len().is_multiple_of(f), "y holds whole rows");
        // SAFETY: `self` holds kernels whose CPU features were proved by a token
        // (Kernel::new); `g` was checked just above.
        unsafe { (self.gram)(y, g) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bounds_panic_before_any_kernel_runs() {
        let f = 16;
        let g = vec![0f32; f * f];
        let y = vec![0f32; 2 * f]; // rows 0 and 1 of y only
        let ok = Csr::from_triplets(1, 2, &[(0, 1, 1.0f32)]);
        let past_y = Csr::from_triplets(1, 4, &[(0, 3, 1.0f32)]);
        let problem = |m| Problem {
            g: &g,
            y: &y,
            m,
            f,
            cg_steps: 3,
            extra_reg: None,
        };
        for simd in [Simd::Portable, Simd::Avx2, Simd::Avx512] {
            let k = Kernel::new(simd, f).expect("16 factors have a kernel");
            let mut xs = vec![0.5f32; f];
            k.solve_rows(&problem(&ok), 0, &mut xs);
            let panics = |run: &dyn Fn()| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err()
            };
            assert!(panics(&|| k.solve_rows(
                &problem(&past_y),
                0,
                &mut vec![0f32; f]
            )));
            assert!(panics(&|| k.solve_rows(
                &problem(&ok),
                0,
                &mut vec![0f32; f + 1]
            )));
            assert!(panics(&|| k.solve_rows(
                &problem(&ok),
                1,
                &mut vec![0f32; f]
            )));
            assert!(panics(&|| k.gram(&y, &mut vec![0f32; f * f - 1])));
            assert!(panics(&|| k.gram(&y[1..], &mut vec![0f32; f * f])));
            let mut gram = vec![0f32; f * f];
            k.gram(&y, &mut gram);
        }
        assert!(
            Kernel::new(Simd::detected(), 12).is_none(),
            "12 is the slice version's"
        );
    }
}
