//! The few statistics the analysis needs: normal and chi-square (1 degree of
//! freedom) tails, the Wilson interval, the two-proportion z-test, a percentile.

use std::f64::consts::SQRT_2;

/// z for a two-sided 95 % interval (the normal's 0.975 quantile).
pub const Z_95: f64 = 1.959_963_984_540_054;

/// P(|Z| >= |z|) for a standard normal Z.
pub fn normal_two_sided_p(z: f64) -> f64 {
    libm::erfc(z.abs() / SQRT_2)
}

/// P(X >= x) for a chi-square X with one degree of freedom.
pub fn chi_square_1df_p(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    libm::erfc((x / 2.0).sqrt())
}

/// The Wilson score interval for `successes` of `trials` at 95 %; `[0, 1]` with no
/// trials. Unlike the normal approximation it stays inside [0, 1] and is honest at
/// small counts and rates near 0.
pub fn wilson_95(successes: u64, trials: u64) -> [f64; 2] {
    if trials == 0 {
        return [0.0, 1.0];
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = Z_95 * Z_95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z_95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    // At 0 or all successes the bound is exactly 0 or 1; the formula leaves ~1e-17.
    let lo = if successes == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let hi = if successes == trials {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    [lo, hi]
}

/// A two-proportion z-test of B against A.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ZTest {
    /// `p_b - p_a`.
    pub difference: f64,
    /// 95 % interval of the difference (unpooled standard error).
    pub difference_ci95: [f64; 2],
    /// The z statistic (pooled standard error); 0 when it is undefined.
    pub z: f64,
    /// Two-sided p-value; 1 when z is undefined.
    pub p_value: f64,
}

/// The pooled two-proportion z-test (as the Python service's `ab_analysis.py`, which
/// applied it to the wrong metric). `None` when either side has no trials.
pub fn two_proportion(a: (u64, u64), b: (u64, u64)) -> Option<ZTest> {
    let ((sa, na), (sb, nb)) = (a, b);
    if na == 0 || nb == 0 {
        return None;
    }
    let (na_f, nb_f) = (na as f64, nb as f64);
    let (pa, pb) = (sa as f64 / na_f, sb as f64 / nb_f);
    let pooled = (sa + sb) as f64 / (na_f + nb_f);
    let se0 = (pooled * (1.0 - pooled) * (1.0 / na_f + 1.0 / nb_f)).sqrt();
    let (z, p_value) = if se0 > 0.0 {
        let z = (pb - pa) / se0;
        (z, normal_two_sided_p(z))
    } else {
        (0.0, 1.0)
    };
    let se = (pa * (1.0 - pa) / na_f + pb * (1.0 - pb) / nb_f).sqrt();
    let difference = pb - pa;
    Some(ZTest {
        difference,
        difference_ci95: [difference - Z_95 * se, difference + Z_95 * se],
        z,
        p_value,
    })
}

/// The `q`-quantile (0..=1) of `values` by linear interpolation between order
/// statistics (NumPy's default); `None` when empty. Sorts `values`.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(values[lo] + (values[hi] - values[lo]) * (pos - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed apart from this code, in Python 3.11: the platform C
    // library's math.erfc(1.96 / sqrt(2)); 3.841458820694124 is the chi-square(1)
    // 95 % critical value from tables; Wilson's interval for 30/100 as published
    // (0.2189, 0.3958), to more digits from the formula typed in Python.
    #[test]
    fn tails_match_scipy() {
        assert!((normal_two_sided_p(1.96) - 0.049_995_790_296_440_87).abs() < 1e-12);
        assert!((normal_two_sided_p(-1.96) - 0.049_995_790_296_440_87).abs() < 1e-12);
        assert!((chi_square_1df_p(3.841_458_820_694_124) - 0.05).abs() < 1e-12);
        assert_eq!(chi_square_1df_p(0.0), 1.0);
        let [lo, hi] = wilson_95(30, 100);
        assert!((lo - 0.218_948_852_949_327_6).abs() < 1e-9, "{lo}");
        assert!((hi - 0.395_848_546_333_466_6).abs() < 1e-9, "{hi}");
        assert_eq!(wilson_95(0, 12)[0], 0.0);
        assert_eq!(wilson_95(12, 12)[1], 1.0);
    }

    #[test]
    fn z_test_by_hand() {
        // 100/1000 vs 130/1000: pooled p 0.115, se0 = sqrt(.115*.885*.002) = 0.014267...
        let t = two_proportion((100, 1000), (130, 1000)).unwrap();
        let se0 = (0.115f64 * 0.885 * 0.002).sqrt();
        assert!((t.z - 0.03 / se0).abs() < 1e-12);
        assert!((t.difference - 0.03).abs() < 1e-12);
        assert!(t.p_value > 0.03 && t.p_value < 0.04, "{}", t.p_value);
        assert!(two_proportion((0, 0), (1, 2)).is_none());
        // No variation at all: undefined z, not NaN.
        let flat = two_proportion((0, 10), (0, 10)).unwrap();
        assert_eq!((flat.z, flat.p_value), (0.0, 1.0));
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        // numpy.percentile([1, 2, 3, 4, 10], 95) == 8.8
        let mut v = vec![10.0, 1.0, 3.0, 2.0, 4.0];
        assert!((quantile(&mut v, 0.95).unwrap() - 8.8).abs() < 1e-12);
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
