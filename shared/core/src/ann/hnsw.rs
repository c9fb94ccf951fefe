//! The usearch HNSW index, its file format (header, checksum) and its search.

use sha2::{Digest, Sha256};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::{AnnError, AnnParams, FORMAT, HASHED_HEADER, HEADER_LEN, MAGIC, MAX_DIMS};
use crate::filter::Allowed;
use crate::score;
use crate::topk::{Scored, TopK};

fn lib(e: impl std::fmt::Display) -> AnnError {
    AnnError::Library(e.to_string())
}

/// An HNSW index over a model's item rows (key = item row).
pub struct AnnIndex {
    index: Index,
    n_items: usize,
    dims: usize,
    params: AnnParams,
}

impl std::fmt::Debug for AnnIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnIndex")
            .field("n_items", &self.n_items)
            .field("dims", &self.dims)
            .field("params", &self.params)
            .finish()
    }
}

fn new_index(dims: usize, p: AnnParams) -> Result<Index, AnnError> {
    Index::new(&IndexOptions {
        dimensions: dims,
        metric: MetricKind::IP,
        quantization: ScalarKind::F32,
        connectivity: p.connectivity as usize,
        expansion_add: p.ef_construction as usize,
        expansion_search: p.ef_search as usize,
        multi: false,
    })
    .map_err(lib)
}

impl AnnIndex {
    /// Builds an index over `items` (C-order rows of `dims` values), inserting rows
    /// in order on one thread so the result is deterministic.
    pub fn build(items: &[f32], dims: usize, params: AnnParams) -> Result<Self, AnnError> {
        let params = params.check()?;
        if dims == 0 || dims > MAX_DIMS as usize || !items.len().is_multiple_of(dims) {
            return Err(AnnError::Header(format!(
                "{} values do not form rows of {dims} factors (1..={MAX_DIMS})",
                items.len()
            )));
        }
        let n_items = items.len() / dims;
        let index = new_index(dims, params)?;
        index.reserve(n_items).map_err(lib)?;
        for (row, v) in items.chunks_exact(dims).enumerate() {
            index.add(row as u64, v).map_err(lib)?;
        }
        Ok(AnnIndex {
            index,
            n_items,
            dims,
            params,
        })
    }

    /// Items indexed.
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Factors per item.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The parameters it was built with.
    pub fn params(&self) -> AnnParams {
        self.params
    }

    /// Changes the search candidate list size (for a sweep; what is saved keeps it).
    pub fn set_ef_search(&mut self, ef_search: u32) -> Result<(), AnnError> {
        let params = AnnParams {
            ef_search,
            ..self.params
        }
        .check()?;
        self.index.change_expansion_search(ef_search as usize);
        self.params = params;
        Ok(())
    }

    /// The `hnsw.idx` bytes: header, then usearch's own serialisation.
    pub fn to_bytes(&self) -> Result<Vec<u8>, AnnError> {
        let len = self.index.serialized_length();
        let mut out = vec![0u8; HEADER_LEN + len];
        self.index
            .save_to_buffer(&mut out[HEADER_LEN..])
            .map_err(lib)?;
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        out[12..16].copy_from_slice(&(self.dims as u32).to_le_bytes());
        out[16..24].copy_from_slice(&(self.n_items as u64).to_le_bytes());
        out[24..28].copy_from_slice(&self.params.connectivity.to_le_bytes());
        out[28..32].copy_from_slice(&self.params.ef_construction.to_le_bytes());
        out[32..36].copy_from_slice(&self.params.ef_search.to_le_bytes());
        // 36..40 reserved, zero.
        out[40..48].copy_from_slice(&(len as u64).to_le_bytes());
        let sum = checksum(&out[..HASHED_HEADER], &out[HEADER_LEN..]);
        out[HASHED_HEADER..HEADER_LEN].copy_from_slice(&sum);
        Ok(out)
    }

    /// Reads `hnsw.idx` bytes, refusing anything [`to_bytes`](Self::to_bytes) did
    /// not write (the checksum is verified before usearch sees a byte).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AnnError> {
        if bytes.len() < HEADER_LEN {
            return Err(if bytes.len() >= 8 && &bytes[..8] != MAGIC {
                AnnError::BadMagic
            } else {
                AnnError::Truncated {
                    found: bytes.len(),
                    needed: HEADER_LEN,
                }
            });
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        if &bytes[..8] != MAGIC {
            return Err(AnnError::BadMagic);
        }
        if u32_at(8) != FORMAT {
            return Err(AnnError::Format(u32_at(8)));
        }
        let payload = u64_at(40);
        let expected = (HEADER_LEN as u64).saturating_add(payload);
        if (bytes.len() as u64) < expected {
            return Err(AnnError::Truncated {
                found: bytes.len(),
                needed: usize::try_from(expected).unwrap_or(usize::MAX),
            });
        }
        if bytes.len() as u64 > expected {
            return Err(AnnError::TrailingBytes {
                found: bytes.len(),
                expected: expected as usize,
            });
        }
        if checksum(&bytes[..HASHED_HEADER], &bytes[HEADER_LEN..])[..]
            != bytes[HASHED_HEADER..HEADER_LEN]
        {
            return Err(AnnError::Checksum);
        }
        // From here the bytes are what to_bytes wrote (or a deliberate forgery with a
        // matching SHA-256); the range checks still keep allocations bounded.
        let (dims, n_items) = (u32_at(12), u64_at(16));
        if dims == 0 || dims > MAX_DIMS || u32_at(36) != 0 {
            return Err(AnnError::Header(format!(
                "dimensions {dims} (1..={MAX_DIMS}), reserved {}",
                u32_at(36)
            )));
        }
        let params = AnnParams {
            connectivity: u32_at(24),
            ef_construction: u32_at(28),
            ef_search: u32_at(32),
        }
        .check()?;
        // Every item stores its vector, so the payload bounds the item count.
        if n_items == 0 || n_items > payload / (dims as u64 * 4) {
            return Err(AnnError::Header(format!(
                "{n_items} items of {dims} factors cannot fit in {payload} bytes"
            )));
        }
        let index = new_index(dims as usize, params)?;
        index.load_from_buffer(&bytes[HEADER_LEN..]).map_err(lib)?;
        let ann = AnnIndex {
            n_items: n_items as usize,
            dims: dims as usize,
            params,
            index,
        };
        // The usearch header must agree with ours (same search settings on load).
        ann.index.change_expansion_search(params.ef_search as usize);
        if ann.index.size() != ann.n_items || ann.index.dimensions() != ann.dims {
            return Err(AnnError::Shape {
                index_items: ann.index.size(),
                index_dims: ann.index.dimensions(),
                model_items: ann.n_items,
                model_dims: ann.dims,
            });
        }
        Ok(ann)
    }

    /// Refuses an index built for another catalogue shape.
    pub(crate) fn check_shape(&self, n_items: usize, dims: usize) -> Result<(), AnnError> {
        if self.n_items == n_items && self.dims == dims {
            Ok(())
        } else {
            Err(AnnError::Shape {
                index_items: self.n_items,
                index_dims: self.dims,
                model_items: n_items,
                model_dims: dims,
            })
        }
    }

    /// Top-`k` of `items` (the indexed rows, C order, [`dims`](Self::dims) per row)
    /// for `user`, skipping the sorted `excluded` rows and the rows `allowed` refuses inside the graph walk,
    /// re-scored exactly, best first with lower rows winning ties. `None` when the walk found fewer than the `k`
    /// (or all remaining) items, or usearch failed: the caller scans exactly.
    pub fn top_k(
        &self,
        items: &[f32],
        user: &[f32],
        excluded: &[u32],
        allowed: Option<&Allowed>,
        k: usize,
    ) -> Option<Vec<Scored>> {
        if items.len() != self.n_items * self.dims || user.len() != self.dims {
            return None;
        }
        let passes = |row: u32| {
            excluded.binary_search(&row).is_err() && allowed.is_none_or(|a| a.contains(row))
        };
        let available = self.n_items.saturating_sub(excluded.len());
        let want = k
            .min(available)
            .min(allowed.map_or(usize::MAX, Allowed::count));
        if want == 0 {
            return Some(Vec::new());
        }
        let found = self
            .index
            .filtered_search(user, want, |key| u32::try_from(key).is_ok_and(passes))
            .map_err(|e| tracing::warn!(error = %e, "HNSW search failed; scanning exactly"))
            .ok()?;
        let mut rows: Vec<u32> = found
            .keys
            .iter()
            .filter_map(|&key| u32::try_from(key).ok())
            .filter(|&row| (row as usize) < self.n_items && passes(row))
            .collect();
        rows.sort_unstable();
        rows.dedup();
        if rows.len() < want {
            return None;
        }
        let (f, simd) = (self.dims, score::Simd::detected());
        let mut top = TopK::new(k);
        let mut one = [0f32];
        // Rows in increasing order, as TopK's tie rule needs.
        for row in rows {
            let r = row as usize;
            score::scores_with(simd, user, &items[r * f..(r + 1) * f], &mut one);
            top.push(one[0], row);
        }
        Some(top.into_sorted())
    }
}

fn checksum(header: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(header);
    h.update(payload);
    h.finalize().into()
}
