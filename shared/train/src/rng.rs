//! NumPy's `default_rng(seed)` stream (SeedSequence -> PCG64), enough of it to draw
//! `random(shape, dtype=float32)`. implicit 0.7.3 initialises its factors with
//! `default_rng(random_state).random((n, f), dtype=float32) * 0.01`, users first,
//! then items from the same stream; drawing the same numbers lets `recs train
//! --seed S` start exactly where `AlternatingLeastSquares(random_state=S)` starts.

const MASK32: u64 = 0xFFFF_FFFF;
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;
const PCG_MULT: u128 = (2_549_297_995_355_413_924u128 << 64) | 4_865_540_595_714_422_341u128;

/// numpy.random.SeedSequence(seed) for a non-negative integer seed.
fn seed_sequence_pool(seed: u64) -> [u32; POOL_SIZE] {
    // _coerce_to_uint32_array: little-endian 32-bit words, [0] for 0.
    let mut entropy = vec![(seed & MASK32) as u32];
    if seed >> 32 != 0 {
        entropy.push((seed >> 32) as u32);
    }
    let mut hash_const = INIT_A;
    let mut hashmix = |value: u32| {
        let mut v = value ^ hash_const;
        hash_const = hash_const.wrapping_mul(MULT_A);
        v = v.wrapping_mul(hash_const);
        v ^ (v >> XSHIFT)
    };
    let mix = |x: u32, y: u32| {
        let r = MIX_MULT_L
            .wrapping_mul(x)
            .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
        r ^ (r >> XSHIFT)
    };
    let mut pool = [0u32; POOL_SIZE];
    for (i, slot) in pool.iter_mut().enumerate() {
        *slot = hashmix(entropy.get(i).copied().unwrap_or(0));
    }
    for src in 0..POOL_SIZE {
        for dst in 0..POOL_SIZE {
            if src != dst {
                let h = hashmix(pool[src]);
                pool[dst] = mix(pool[dst], h);
            }
        }
    }
    for &e in entropy.iter().skip(POOL_SIZE) {
        for slot in pool.iter_mut() {
            let h = hashmix(e);
            *slot = mix(*slot, h);
        }
    }
    pool
}

/// SeedSequence.generate_state(n_words64, uint64).
fn generate_state_u64(pool: &[u32; POOL_SIZE], n: usize) -> Vec<u64> {
    let mut hash_const = INIT_B;
    let words: Vec<u32> = (0..2 * n)
        .map(|i| {
            let mut v = pool[i % POOL_SIZE] ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_B);
            v = v.wrapping_mul(hash_const);
            v ^ (v >> XSHIFT)
        })
        .collect();
    words
        .chunks_exact(2)
        .map(|w| u64::from(w[0]) | (u64::from(w[1]) << 32))
        .collect()
}

/// PCG64 (XSL-RR 128/64) as numpy's bit generator, with its 32-bit buffering.
pub(crate) struct NumpyRng {
    state: u128,
    inc: u128,
    pending: Option<u32>,
}

impl NumpyRng {
    /// `numpy.random.default_rng(seed)`.
    pub(crate) fn new(seed: u64) -> Self {
        let v = generate_state_u64(&seed_sequence_pool(seed), 4);
        let initstate = (u128::from(v[0]) << 64) | u128::from(v[1]);
        let initseq = (u128::from(v[2]) << 64) | u128::from(v[3]);
        let mut rng = NumpyRng {
            state: 0,
            inc: (initseq << 1) | 1,
            pending: None,
        };
        rng.step();
        rng.state = rng.state.wrapping_add(initstate);
        rng.step();
        rng
    }

    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
    }

    /// `bit_generator.random_raw()`.
    fn next_u64(&mut self) -> u64 {
        self.step();
        let s = self.state;
        let x = ((s >> 64) as u64) ^ (s as u64);
        x.rotate_right((s >> 122) as u32)
    }

    fn next_u32(&mut self) -> u32 {
        if let Some(v) = self.pending.take() {
            return v;
        }
        let n = self.next_u64();
        self.pending = Some((n >> 32) as u32);
        n as u32
    }

    /// One draw of `random(dtype=float32)`: uniform in [0, 1) on a 2^-24 grid.
    pub(crate) fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy() {
        // np.random.SeedSequence(42).generate_state(4, np.uint64)
        assert_eq!(
            generate_state_u64(&seed_sequence_pool(42), 4),
            vec![
                11465652750463011511,
                15382171918060459190,
                9018504550953525431,
                3703499796004394495
            ]
        );
        // np.random.default_rng(0).bit_generator.random_raw(2)
        let mut g = NumpyRng::new(0);
        assert_eq!(
            [g.next_u64(), g.next_u64()],
            [11749869230777074271, 4976686463289251617]
        );
        // (default_rng(42).random((2, 3), dtype=np.float32) * 0.01).view(np.uint32)
        let mut g = NumpyRng::new(42);
        let bits: Vec<u32> = (0..6).map(|_| (g.next_f32() * 0.01f32).to_bits()).collect();
        assert_eq!(
            bits,
            vec![980023111, 1006476322, 1003912559, 999280586, 999154675, 1007463476]
        );
        // default_rng(12345678901).random(3, dtype=np.float32): a seed above 2^32.
        let mut g = NumpyRng::new(12_345_678_901);
        let v: Vec<f32> = (0..3).map(|_| g.next_f32()).collect();
        assert!((v[0] - 0.0879392).abs() < 1e-6 && (v[2] - 0.7384326).abs() < 1e-6);
    }
}
