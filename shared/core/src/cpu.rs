//! CPU-feature detection, once for the workspace: the SIMD flavour the process uses
//! ([`Simd::detected`], which honours `RECS_SIMD`) and, on x86_64, tokens that prove
//! a feature check succeeded (memchr's pattern). [`Avx2Fma`] and [`Avx512`] have a
//! private field, so the only way to get one is their `new` (or [`Simd::avx2_fma`],
//! [`Simd::avx512`], which call it): holding the value proves the CPU has the
//! features. Every `#[target_feature]` kernel (here, in [`score`](crate::score), in
//! [`foldin`](crate::foldin) and in recs-train) is reached only through a safe
//! function that takes the token, so no kernel can run on a CPU that lacks its
//! instructions whatever its caller does.
//!
//! The `RECS_SIMD` rule is documented on [`Simd::detected`] (this module is private;
//! its items are re-exported at the crate root).

use std::sync::OnceLock;

/// A kernel flavour: what [`Simd::detected`] picked for the process, or what a test
/// or a bench asks for (`score::scores_with`, recs-train's kernels). A flavour asked
/// for that the CPU lacks falls back to the next one down; on x86_64 the tokens
/// (`Simd::avx512`, `Simd::avx2_fma`) say what may actually run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    /// AVX-512F (with AVX2 and FMA): 16 f32 lanes.
    Avx512,
    /// AVX2 with FMA: 8 f32 lanes.
    Avx2,
    /// Plain Rust (the compiler's vectorisation for the baseline target).
    Portable,
}

impl Simd {
    /// The best flavour the CPU supports, capped by `RECS_SIMD`; detected once per
    /// process (the variable is read at the first call).
    ///
    /// # `RECS_SIMD`
    ///
    /// The one rule for every SIMD kernel (scoring, fold-in, training):
    ///
    /// - `portable`: the portable kernels only; no `#[target_feature]` code runs;
    /// - `avx2`: at most AVX2+FMA;
    /// - anything else, or unset (`avx512` names the default): the best the CPU
    ///   has, AVX-512 (with AVX2 and FMA), else AVX2+FMA, else portable.
    ///
    /// Values match exactly (`AVX2` is "anything else"). The variable only ever
    /// caps: a flavour the CPU lacks is never picked. Off x86_64 the flavour is
    /// always [`Simd::Portable`].
    pub fn detected() -> Simd {
        static CHOICE: OnceLock<Simd> = OnceLock::new();
        *CHOICE.get_or_init(|| {
            let cap = std::env::var("RECS_SIMD").unwrap_or_default();
            #[cfg(target_arch = "x86_64")]
            let (avx2, avx512) = (Avx2Fma::new().is_some(), Avx512::new().is_some());
            #[cfg(not(target_arch = "x86_64"))]
            let (avx2, avx512) = (false, false);
            Simd::choose(&cap, avx2, avx512)
        })
    }

    /// The `RECS_SIMD` rule, given the value (empty when unset) and what the CPU has.
    fn choose(cap: &str, avx2_fma: bool, avx512: bool) -> Simd {
        match cap {
            "portable" => Simd::Portable,
            "avx2" if avx2_fma => Simd::Avx2,
            "avx2" => Simd::Portable,
            _ if avx512 => Simd::Avx512,
            _ if avx2_fma => Simd::Avx2,
            _ => Simd::Portable,
        }
    }

    /// The name shown by the bench and recorded in a trained model's meta.json.
    pub fn name(self) -> &'static str {
        match self {
            Simd::Avx512 => "avx512",
            Simd::Avx2 => "avx2+fma",
            Simd::Portable => "portable",
        }
    }

    /// The AVX-512 token, if this flavour is [`Simd::Avx512`] and the CPU has it.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    pub fn avx512(self) -> Option<Avx512> {
        match self {
            Simd::Avx512 => Avx512::new(),
            Simd::Avx2 | Simd::Portable => None,
        }
    }

    /// The AVX2+FMA token, if this flavour allows AVX2 (it is [`Simd::Avx512`] or
    /// [`Simd::Avx2`]) and the CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    pub fn avx2_fma(self) -> Option<Avx2Fma> {
        match self {
            Simd::Avx512 | Simd::Avx2 => Avx2Fma::new(),
            Simd::Portable => None,
        }
    }
}

/// Proof that the CPU supports AVX2 and FMA: only [`Avx2Fma::new`] makes one, after
/// `is_x86_feature_detected!` said yes to both. Zero-sized and `Copy`; pass it to
/// the kernels compiled with `#[target_feature(enable = "avx2,fma")]`.
///
/// It checks the CPU only; `RECS_SIMD` is applied by [`Simd::detected`], so take
/// the token from [`Simd::avx2_fma`] to honour it.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avx2Fma(());

#[cfg(target_arch = "x86_64")]
impl Avx2Fma {
    /// The token, if the CPU has AVX2 and FMA (std caches the answer: a couple of
    /// atomic loads).
    #[inline]
    pub fn new() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2Fma(()))
    }
}

/// Proof that the CPU supports AVX-512F, AVX2 and FMA: only [`Avx512::new`] makes
/// one, after `is_x86_feature_detected!` said yes to all three. Zero-sized and
/// `Copy`; pass it to the kernels compiled with `#[target_feature(enable =
/// "avx512f")]` (or `"avx512f,avx2,fma"`).
///
/// It checks the CPU only; take it from [`Simd::avx512`] to honour `RECS_SIMD`.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avx512(());

#[cfg(target_arch = "x86_64")]
impl Avx512 {
    /// The token, if the CPU has AVX-512F, AVX2 and FMA.
    #[inline]
    pub fn new() -> Option<Self> {
        (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma"))
        .then_some(Avx512(()))
    }

    /// AVX-512 hardware has AVX2 and FMA too (checked by [`Avx512::new`]).
    #[inline]
    pub fn avx2_fma(self) -> Avx2Fma {
        Avx2Fma(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recs_simd_caps_and_never_forces() {
        let all = [(false, false), (true, false), (true, true)];
        for (avx2, avx512) in all {
            let best = if avx512 {
                Simd::Avx512
            } else if avx2 {
                Simd::Avx2
            } else {
                Simd::Portable
            };
            let capped = if avx2 { Simd::Avx2 } else { Simd::Portable };
            assert_eq!(Simd::choose("", avx2, avx512), best);
            assert_eq!(Simd::choose("avx512", avx2, avx512), best);
            assert_eq!(Simd::choose("AVX2", avx2, avx512), best, "exact match only");
            assert_eq!(Simd::choose("anything", avx2, avx512), best);
            assert_eq!(Simd::choose("avx2", avx2, avx512), capped);
            assert_eq!(Simd::choose("portable", avx2, avx512), Simd::Portable);
        }
    }

    #[test]
    fn the_detected_flavour_has_its_tokens() {
        let simd = Simd::detected();
        assert_eq!(Simd::detected(), simd, "detected once");
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(simd.avx512().is_some(), simd == Simd::Avx512);
            assert_eq!(simd.avx2_fma().is_some(), simd != Simd::Portable);
            if let Some(t) = Avx512::new() {
                assert_eq!(Some(t.avx2_fma()), Avx2Fma::new());
            }
            assert!(Simd::Portable.avx2_fma().is_none());
            assert!(Simd::Avx2.avx512().is_none());
        }
        #[cfg(not(target_arch = "x86_64"))]
        assert_eq!(simd, Simd::Portable);
    }
}
