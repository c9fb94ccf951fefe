//! The scoring hot path: a dot product the compiler vectorises, and a bounded
//! top-k selection with a deterministic tie rule.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One recommended item: catalogue row and score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// The item's row in the model (index into its item ids).
    pub row: u32,
    /// Dot-product score, or interaction count in the popularity ranking.
    pub score: f32,
}

/// Lanes of independent partial sums: enough to fill SIMD registers and hide the
/// latency of dependent additions.
const LANES: usize = 16;

/// Dot product of two equal-length vectors.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Orders candidates so that the heap's top is the worst kept one: lower score is
/// worse; at equal score the higher row is worse.
#[derive(Clone, Copy)]
struct Worst(Scored);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        // "Greater" = worse, so BinaryHeap (a max-heap) keeps the worst on top.
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then(self.0.row.cmp(&other.0.row))
    }
}

/// Keeps the `k` best (score, row) pairs seen so far.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    /// An empty selection that keeps at most `k` candidates.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Offers a candidate. Rows must be offered in increasing order for the tie rule
    /// (lower row wins) to hold with the cheap threshold test below.
    #[inline]
    pub fn push(&mut self, score: f32, row: u32) {
        if self.heap.len() < self.k {
            self.heap.push(Worst(Scored { row, score }));
        } else if let Some(mut worst) = self.heap.peek_mut() {
            // Strictly greater: an equal score arrives with a higher row, so it loses.
            if score > worst.0.score {
                *worst = Worst(Scored { row, score });
            }
        }
    }

    /// The worst kept score once `k` candidates are kept (a candidate must beat
    /// it to enter), else negative infinity.
    #[inline]
    pub fn threshold(&self) -> f32 {
        match self.heap.peek() {
            Some(w) if self.heap.len() >= self.k => w.0.score,
            _ => f32::NEG_INFINITY,
        }
    }

    /// The kept candidates, best first.
    pub fn into_sorted(self) -> Vec<Scored> {
        // into_sorted_vec is ascending by Ord, i.e. best first here.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|w| w.0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_for_all_lengths() {
        for n in 0..70 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "n={n}");
        }
    }

    #[test]
    fn keeps_best_k_with_lower_row_on_ties() {
        let scores = [0.5, 0.9, 0.5, 0.1, 0.9, 0.7];
        let mut t = TopK::new(3);
        for (row, &s) in scores.iter().enumerate() {
            t.push(s, row as u32);
        }
        let got: Vec<(u32, f32)> = t.into_sorted().iter().map(|s| (s.row, s.score)).collect();
        assert_eq!(got, vec![(1, 0.9), (4, 0.9), (5, 0.7)]);

        let mut t = TopK::new(2);
        for row in 0..5 {
            t.push(1.0, row);
        }
        let rows: Vec<u32> = t.into_sorted().iter().map(|s| s.row).collect();
        assert_eq!(rows, vec![0, 1]);
    }

    #[test]
    fn k_larger_than_candidates_and_zero() {
        let mut t = TopK::new(10);
        t.push(1.0, 0);
        t.push(2.0, 1);
        assert_eq!(t.into_sorted().len(), 2);
        let mut z = TopK::new(0);
        z.push(1.0, 0);
        assert!(z.into_sorted().is_empty());
    }
}
