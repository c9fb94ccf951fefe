//! scipy `save_npz` CSR matrices (`seen_csr.npz`): a zip of `indices.npy`,
//! `indptr.npy`, `data.npy`, `shape.npy` and `format.npy`.

use std::io::{Cursor, Read, Write};

use crate::csr::CsrPattern;
use crate::npy::{self, NpyError};

/// Why a `.npz` CSR file was refused.
#[derive(Debug, thiserror::Error)]
pub enum NpzError {
    /// The bytes are not a readable zip archive.
    #[error("not a readable zip archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// A required member (e.g. `indptr.npy`) is absent.
    #[error("member {0} is missing")]
    MissingMember(&'static str),
    /// A member is not a valid `.npy` of an accepted dtype.
    #[error("member {member}: {source}")]
    Npy {
        /// The member's name, e.g. `indices.npy`.
        member: &'static str,
        /// Why the member was refused.
        #[source]
        source: NpyError,
    },
    /// A member could not be decompressed or read.
    #[error("reading member {member}: {source}")]
    Io {
        /// The member's name.
        member: &'static str,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// `format.npy` names a sparse format other than `csr` (the format found).
    #[error("format is {0:?}, expected \"csr\"")]
    NotCsr(String),
    /// The arrays do not form a valid CSR matrix (what is wrong).
    #[error("inconsistent CSR structure: {0}")]
    Inconsistent(String),
}

fn member(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &'static str,
) -> Result<Vec<u8>, NpzError> {
    let mut f = zip.by_name(name).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => NpzError::MissingMember(name),
        other => NpzError::Zip(other),
    })?;
    let mut buf = Vec::with_capacity(f.size() as usize);
    f.read_to_end(&mut buf).map_err(|source| NpzError::Io {
        member: name,
        source,
    })?;
    Ok(buf)
}

/// Reads a scipy CSR `.npz` (int32 or int64 indices, float32 or float64 data) and
/// checks its structure: indptr monotone from 0 to nnz, indices within the columns.
pub fn read_csr(bytes: &[u8]) -> Result<CsrPattern, NpzError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))?;
    let npy_err = |member| move |source| NpzError::Npy { member, source };

    let format =
        npy::read_bytes(&member(&mut zip, "format.npy")?).map_err(npy_err("format.npy"))?;
    let format = String::from_utf8_lossy(&format)
        .trim_end_matches('\0')
        .to_string();
    if format != "csr" {
        return Err(NpzError::NotCsr(format));
    }
    let shape = npy::read_int(&member(&mut zip, "shape.npy")?).map_err(npy_err("shape.npy"))?;
    let [rows, cols] = shape.data[..] else {
        return Err(NpzError::Inconsistent(format!(
            "shape has {} entries",
            shape.data.len()
        )));
    };
    let (rows, cols) = (
        usize::try_from(rows).map_err(|_| NpzError::Inconsistent(format!("rows {rows}")))?,
        usize::try_from(cols).map_err(|_| NpzError::Inconsistent(format!("cols {cols}")))?,
    );
    let indptr = npy::read_int(&member(&mut zip, "indptr.npy")?).map_err(npy_err("indptr.npy"))?;
    let indices =
        npy::read_int(&member(&mut zip, "indices.npy")?).map_err(npy_err("indices.npy"))?;
    // Values are not used, but their dtype and count are part of a well-formed file.
    let data = npy::read_float(&member(&mut zip, "data.npy")?).map_err(npy_err("data.npy"))?;

    if indptr.data.len() != rows + 1 {
        return Err(NpzError::Inconsistent(format!(
            "indptr has {} entries for {rows} rows",
            indptr.data.len()
        )));
    }
    let nnz = indices.data.len();
    if data.data.len() != nnz {
        return Err(NpzError::Inconsistent(format!(
            "{} values for {nnz} indices",
            data.data.len()
        )));
    }
    if indptr.data[0] != 0
        || indptr.data[rows] != nnz as i64
        || indptr.data.windows(2).any(|w| w[0] > w[1])
    {
        return Err(NpzError::Inconsistent(
            "indptr must rise monotonically from 0 to nnz".into(),
        ));
    }
    if let Some(bad) = indices.data.iter().find(|&&c| c < 0 || c >= cols as i64) {
        return Err(NpzError::Inconsistent(format!(
            "column index {bad} outside 0..{cols}"
        )));
    }
    let row_lists = indptr
        .data
        .windows(2)
        .map(|w| {
            indices.data[w[0] as usize..w[1] as usize]
                .iter()
                .map(|&c| c as u32)
                .collect()
        })
        .collect();
    let pattern = CsrPattern::from_rows(cols, row_lists);
    debug_assert_eq!(pattern.rows, rows);
    Ok(pattern)
}

/// Writes a CSR pattern the way `scipy.sparse.save_npz` does (deflated zip, int32
/// indices, float32 ones as data), so scipy reads it back.
pub fn write_csr(m: &CsrPattern) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let indices: Vec<i32> = m.indices.iter().map(|&c| c as i32).collect();
    let indptr: Vec<i32> = m.indptr.iter().map(|&p| p as i32).collect();
    let members: [(&str, Vec<u8>); 5] = [
        ("indices.npy", npy::write_i32(&[indices.len()], &indices)),
        ("indptr.npy", npy::write_i32(&[indptr.len()], &indptr)),
        ("format.npy", npy::write_bytes_scalar(b"csr")),
        (
            "shape.npy",
            npy::write_i64(&[2], &[m.rows as i64, m.cols as i64]),
        ),
        ("data.npy", npy::write_f32(&[m.nnz()], &vec![1.0; m.nnz()])),
    ];
    for (name, bytes) in members {
        // Writing to an in-memory buffer cannot fail.
        zip.start_file(name, opts).expect("in-memory zip");
        zip.write_all(&bytes).expect("in-memory zip");
    }
    zip.finish().expect("in-memory zip").into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sorts_rows() {
        let m = CsrPattern::from_rows(5, vec![vec![3, 1], vec![], vec![4, 0, 4]]);
        let back = read_csr(&write_csr(&m)).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.column_counts(), vec![1, 1, 0, 1, 1]);
    }

    #[test]
    fn refuses_garbage_and_bad_structure() {
        assert!(matches!(read_csr(b"not a zip"), Err(NpzError::Zip(_))));
        let good = write_csr(&CsrPattern::from_rows(3, vec![vec![0, 2]]));
        assert!(read_csr(&good[..good.len() / 2]).is_err());

        // Column index beyond the shape.
        let mut m = CsrPattern::from_rows(3, vec![vec![0, 2]]);
        m.cols = 2;
        let err = read_csr(&write_csr(&m)).unwrap_err();
        assert!(err.to_string().contains("outside 0..2"), "{err}");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn pattern() -> impl Strategy<Value = CsrPattern> {
            (1usize..40).prop_flat_map(|cols| {
                prop::collection::vec(prop::collection::vec(0..cols as u32, 0..8), 0..12)
                    .prop_map(move |rows| CsrPattern::from_rows(cols, rows))
            })
        }

        proptest! {
            #[test]
            fn csr_round_trips(m in pattern()) {
                prop_assert_eq!(read_csr(&write_csr(&m)).unwrap(), m);
            }

            #[test]
            fn random_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
                prop_assert!(read_csr(&bytes).is_err());
            }

            #[test]
            fn mutated_files_never_panic(
                m in pattern(),
                edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                cut in 0usize..40,
            ) {
                let mut file = write_csr(&m);
                for (at, b) in edits {
                    let at = at % file.len();
                    file[at] = b;
                }
                file.truncate(file.len() - cut.min(file.len()));
                // Refused or read; when read, the pattern is well-formed.
                if let Ok(p) = read_csr(&file) {
                    prop_assert_eq!(p.indptr.len(), p.rows + 1);
                    prop_assert!(p.indices.iter().all(|&c| (c as usize) < p.cols));
                }
            }
        }
    }
}
