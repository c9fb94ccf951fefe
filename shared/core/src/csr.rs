//! The one compressed-sparse-row matrix: training's rating matrix (`Csr<f32>`) and the
//! registry's seen pattern (`Csr<()>`, [`CsrPattern`], values dropped at no cost).

/// A CSR sparse matrix. Column indices are sorted within each row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr<V = ()> {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row `r` holds entries `indptr[r]..indptr[r + 1]`.
    pub indptr: Vec<usize>,
    /// Column of each entry.
    pub indices: Vec<u32>,
    /// Value of each entry (zero-sized for a pattern).
    pub data: Vec<V>,
}

/// Which entries exist, without values (the registry stores 1.0 for "seen").
pub type CsrPattern = Csr<()>;

impl CsrPattern {
    /// Builds a pattern from per-row column lists (sorted and de-duplicated here).
    pub fn from_rows(cols: usize, mut rows: Vec<Vec<u32>>) -> Self {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        let mut indices = Vec::new();
        indptr.push(0);
        for r in rows.iter_mut() {
            r.sort_unstable();
            r.dedup();
            indices.extend_from_slice(r);
            indptr.push(indices.len());
        }
        Csr {
            rows: rows.len(),
            cols,
            data: vec![(); indices.len()],
            indptr,
            indices,
        }
    }

    /// Builds a pattern from scipy's arrays without a per-row copy: each row is
    /// sorted and de-duplicated in place, and only a row that needs it is touched
    /// (scipy writes sorted rows). `indptr` must rise monotonically from 0 to
    /// `indices.len()` (the caller has checked it).
    pub(crate) fn from_indptr(cols: usize, mut indptr: Vec<usize>, mut indices: Vec<u32>) -> Self {
        debug_assert_eq!(indptr.first(), Some(&0));
        debug_assert_eq!(indptr.last(), Some(&indices.len()));
        let (mut write, mut start) = (0, 0);
        for r in 0..indptr.len() - 1 {
            // indptr[r] already holds the compacted start; the original is `start`.
            let end = indptr[r + 1];
            let row = &mut indices[start..end];
            let mut len = row.len();
            if row.windows(2).any(|w| w[0] >= w[1]) {
                row.sort_unstable();
                len = dedup_sorted(row);
            }
            if write != start {
                indices.copy_within(start..start + len, write);
            }
            write += len;
            indptr[r + 1] = write;
            start = end;
        }
        indices.truncate(write);
        Csr {
            rows: indptr.len() - 1,
            cols,
            data: vec![(); indices.len()],
            indptr,
            indices,
        }
    }
}

/// Moves the distinct values of a sorted slice to its front; returns how many.
fn dedup_sorted(row: &mut [u32]) -> usize {
    let mut len = 0;
    for i in 0..row.len() {
        if len == 0 || row[i] != row[len - 1] {
            row[len] = row[i];
            len += 1;
        }
    }
    len
}

impl<V: Copy> Csr<V> {
    /// Builds a matrix from (row, col, value) triplets; duplicates are not merged.
    pub fn from_triplets(rows: usize, cols: usize, triplets: &[(u32, u32, V)]) -> Self {
        let mut indptr = vec![0usize; rows + 1];
        for &(r, _, _) in triplets {
            indptr[r as usize + 1] += 1;
        }
        for r in 0..rows {
            indptr[r + 1] += indptr[r];
        }
        let mut next = indptr.clone();
        let mut indices = vec![0u32; triplets.len()];
        let mut data = Vec::with_capacity(triplets.len());
        // Placed by position below; every slot is written exactly once.
        let mut slots: Vec<Option<V>> = vec![None; triplets.len()];
        for &(r, c, v) in triplets {
            let at = &mut next[r as usize];
            indices[*at] = c;
            slots[*at] = Some(v);
            *at += 1;
        }
        data.extend(slots.into_iter().flatten());
        let mut m = Csr {
            rows,
            cols,
            indptr,
            indices,
            data,
        };
        m.sort_rows();
        m
    }

    fn sort_rows(&mut self) {
        for r in 0..self.rows {
            let (s, e) = (self.indptr[r], self.indptr[r + 1]);
            if self.indices[s..e].windows(2).all(|w| w[0] <= w[1]) {
                continue;
            }
            let mut pairs: Vec<(u32, V)> = self.indices[s..e]
                .iter()
                .copied()
                .zip(self.data[s..e].iter().copied())
                .collect();
            pairs.sort_by_key(|p| p.0);
            for (k, (c, v)) in pairs.into_iter().enumerate() {
                self.indices[s + k] = c;
                self.data[s + k] = v;
            }
        }
    }

    /// The transpose, with sorted column indices (scipy's `.T.tocsr()`).
    pub fn transpose(&self) -> Self {
        let mut indptr = vec![0usize; self.cols + 1];
        for &c in &self.indices {
            indptr[c as usize + 1] += 1;
        }
        for c in 0..self.cols {
            indptr[c + 1] += indptr[c];
        }
        let mut next = indptr.clone();
        let mut indices = vec![0u32; self.nnz()];
        let mut slots: Vec<Option<V>> = vec![None; self.nnz()];
        for r in 0..self.rows {
            for k in self.indptr[r]..self.indptr[r + 1] {
                let at = &mut next[self.indices[k] as usize];
                indices[*at] = r as u32;
                slots[*at] = Some(self.data[k]);
                *at += 1;
            }
        }
        Csr {
            rows: self.cols,
            cols: self.rows,
            indptr,
            indices,
            data: slots.into_iter().flatten().collect(),
        }
    }
}

impl<V> Csr<V> {
    /// The sorted column indices of `row`.
    pub fn row(&self, row: usize) -> &[u32] {
        &self.indices[self.indptr[row]..self.indptr[row + 1]]
    }

    /// Entries in `row`.
    pub fn row_len(&self, row: usize) -> usize {
        self.indptr[row + 1] - self.indptr[row]
    }

    /// Stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Entries per column.
    pub fn column_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.cols];
        self.indices.iter().for_each(|&c| counts[c as usize] += 1);
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triplets_sort_rows_and_transpose() {
        let m = Csr::from_triplets(2, 3, &[(1, 2, 5.0f32), (0, 1, 1.0), (1, 0, 2.0)]);
        assert_eq!(m.indptr, vec![0, 1, 3]);
        assert_eq!(m.row(1), &[0, 2]);
        assert_eq!(m.data, vec![1.0, 2.0, 5.0]);
        let t = m.transpose();
        assert_eq!((t.rows, t.cols), (3, 2));
        assert_eq!(t.row(0), &[1]);
        assert_eq!(t.row(2), &[1]);
        assert_eq!(t.data, vec![2.0, 1.0, 5.0]);
        assert_eq!(t.transpose(), m);
    }

    #[test]
    fn pattern_rows_are_sorted_and_deduplicated() {
        let p = CsrPattern::from_rows(5, vec![vec![3, 1], vec![], vec![4, 0, 4]]);
        assert_eq!(p.row(0), &[1, 3]);
        assert_eq!(p.row(2), &[0, 4]);
        assert_eq!(p.column_counts(), vec![1, 1, 0, 1, 1]);
        assert_eq!(std::mem::size_of_val(&p.data[..]), 0);
    }
}
