//! scipy `save_npz` CSR matrices (`seen_csr.npz`): a zip of `indices.npy`,
//! `indptr.npy`, `data.npy`, `shape.npy` and `format.npy`.

use std::io::{Cursor, Read, Write};

use crate::csr::CsrPattern;
use crate::npy::{self, Dtype, NpyError};

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
    /// A member inflates to more than the archive can honestly hold (its size times
    /// [`MAX_INFLATION`]): a crafted header or a deflate bomb.
    #[error("member {member} inflates past {limit} bytes ({MAX_INFLATION}x the archive): refused")]
    TooLarge {
        /// The member's name.
        member: &'static str,
        /// The bytes it may inflate to.
        limit: u64,
    },
    /// The arrays do not form a valid CSR matrix (what is wrong).
    #[error("inconsistent CSR structure: {0}")]
    Inconsistent(String),
}

/// A member for reading; absent is [`NpzError::MissingMember`].
fn open_member<'z, 'b>(
    zip: &'z mut zip::ZipArchive<Cursor<&'b [u8]>>,
    name: &'static str,
) -> Result<zip::read::ZipFile<'z, Cursor<&'b [u8]>>, NpzError> {
    zip.by_name(name).map_err(|e| match e {
        zip::result::ZipError::FileNotFound => NpzError::MissingMember(name),
        other => NpzError::Zip(other),
    })
}

/// Deflate's best ratio is about 1032:1; no honest member inflates to more than this
/// many times the whole archive's size.
pub const MAX_INFLATION: u64 = 1032;

/// The most bytes a member of an archive of `archive_len` bytes may inflate to.
fn member_limit(archive_len: usize) -> u64 {
    (archive_len as u64).saturating_mul(MAX_INFLATION)
}

/// A member's bytes, read through [`member_limit`]: the size its header claims is
/// only a hint (capped by the limit), never trusted for an allocation.
fn member(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &'static str,
    limit: u64,
) -> Result<Vec<u8>, NpzError> {
    let mut f = open_member(zip, name)?;
    let hint = f.size().min(limit).min(usize::MAX as u64) as usize;
    let mut buf = Vec::new();
    buf.try_reserve_exact(hint)
        .map_err(|_| NpzError::TooLarge {
            member: name,
            limit,
        })?;
    (&mut f)
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|source| NpzError::Io {
            member: name,
            source,
        })?;
    if buf.len() as u64 > limit {
        return Err(NpzError::TooLarge {
            member: name,
            limit,
        });
    }
    Ok(buf)
}

/// Reads a scipy CSR `.npz` (int32 or int64 indices, float32 or float64 data) and
/// checks its structure: indptr monotone from 0 to nnz, indices within the columns.
pub fn read_csr(bytes: &[u8]) -> Result<CsrPattern, NpzError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))?;
    let limit = member_limit(bytes.len());
    let npy_err = |member| move |source| NpzError::Npy { member, source };

    let format =
        npy::read_bytes(&member(&mut zip, "format.npy", limit)?).map_err(npy_err("format.npy"))?;
    let format = String::from_utf8_lossy(&format)
        .trim_end_matches('\0')
        .to_string();
    if format != "csr" {
        return Err(NpzError::NotCsr(format));
    }
    let shape =
        npy::read_int(&member(&mut zip, "shape.npy", limit)?).map_err(npy_err("shape.npy"))?;
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
    let indptr =
        npy::read_int(&member(&mut zip, "indptr.npy", limit)?).map_err(npy_err("indptr.npy"))?;
    // The two large members inflate on two cores. The values are never used (a seen
    // pattern): only their count is checked, and they are streamed through the
    // decompressor (CRC included) without being kept.
    let (indices, data) = rayon::join(
        || column_indices(&member(&mut zip.clone(), "indices.npy", limit)?, cols),
        || member_header(&mut zip.clone(), "data.npy", limit),
    );
    let (indices, data) = (indices?, data?);
    if !matches!(data.dtype, Dtype::F32 | Dtype::F64) {
        return Err(NpzError::Npy {
            member: "data.npy",
            source: NpyError::WrongDtype {
                found: data.dtype.to_string(),
                expected: "<f4 or <f8".into(),
            },
        });
    }

    if indptr.data.len() != rows + 1 {
        return Err(NpzError::Inconsistent(format!(
            "indptr has {} entries for {rows} rows",
            indptr.data.len()
        )));
    }
    let nnz = indices.len();
    if data.len() != nnz {
        return Err(NpzError::Inconsistent(format!(
            "{} values for {nnz} indices",
            data.len()
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
    // Monotonic from 0 to nnz: every entry is a valid usize.
    let indptr = indptr.data.into_iter().map(|p| p as usize).collect();
    Ok(CsrPattern::from_indptr(cols, indptr, indices))
}

/// `indices.npy` (`<i4`, as scipy writes it, or `<i8`) as column numbers, each
/// checked against the column count. The `<i4` case reuses its allocation.
fn column_indices(bytes: &[u8], cols: usize) -> Result<Vec<u32>, NpzError> {
    let err = |source| NpzError::Npy {
        member: "indices.npy",
        source,
    };
    let outside = |c: i64| NpzError::Inconsistent(format!("column index {c} outside 0..{cols}"));
    if npy::parse_header(bytes).map_err(err)?.dtype == Dtype::I32 {
        let a = npy::read_i32(bytes).map_err(err)?;
        if let Some(&bad) = a.data.iter().find(|&&c| c < 0 || c as usize >= cols) {
            return Err(outside(bad.into()));
        }
        return Ok(a.data.into_iter().map(|c| c as u32).collect());
    }
    let a = npy::read_int(bytes).map_err(err)?;
    if let Some(&bad) = a.data.iter().find(|&&c| c < 0 || c >= cols as i64) {
        return Err(outside(bad));
    }
    Ok(a.data.into_iter().map(|c| c as u32).collect())
}

/// A member's `.npy` header and length, its body read through and dropped.
fn member_header(
    zip: &mut zip::ZipArchive<Cursor<&[u8]>>,
    name: &'static str,
    limit: u64,
) -> Result<npy::Header, NpzError> {
    // Enough for any header numpy writes (format 1.0 headers are under 64 KiB).
    const HEAD: u64 = 64 << 10;
    let mut f = open_member(zip, name)?;
    let io = |source| NpzError::Io {
        member: name,
        source,
    };
    let mut head = Vec::new();
    (&mut f).take(HEAD).read_to_end(&mut head).map_err(io)?;
    let rest = std::io::copy(
        &mut (&mut f).take(limit.saturating_add(1)),
        &mut std::io::sink(),
    )
    .map_err(io)?;
    if rest.saturating_add(head.len() as u64) > limit {
        return Err(NpzError::TooLarge {
            member: name,
            limit,
        });
    }
    let len = usize::try_from(rest)
        .ok()
        .and_then(|r| r.checked_add(head.len()))
        .ok_or_else(|| NpzError::Inconsistent(format!("{name} is too large")))?;
    npy::parse_header_of(&head, len).map_err(|source| NpzError::Npy {
        member: name,
        source,
    })
}

/// Writes a CSR pattern as `scipy.sparse.save_npz` lays it out (int32 indices,
/// float32 ones as data), so scipy reads it back. The index arrays are stored, not
/// deflated (as `save_npz(compressed=False)` does): inflating 25 M indices took 350 ms
/// of an ml-25m-size load on one core, longer than fetching the 40 MB deflate saves;
/// the constant data member deflates to almost nothing and stays compressed.
pub fn write_csr(m: &CsrPattern) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let stored = deflated.compression_method(zip::CompressionMethod::Stored);
    let indices: Vec<i32> = m.indices.iter().map(|&c| c as i32).collect();
    let indptr: Vec<i32> = m.indptr.iter().map(|&p| p as i32).collect();
    let members: [(&str, Vec<u8>, _); 5] = [
        (
            "indices.npy",
            npy::write_i32(&[indices.len()], &indices),
            stored,
        ),
        (
            "indptr.npy",
            npy::write_i32(&[indptr.len()], &indptr),
            stored,
        ),
        ("format.npy", npy::write_bytes_scalar(b"csr"), deflated),
        (
            "shape.npy",
            npy::write_i64(&[2], &[m.rows as i64, m.cols as i64]),
            deflated,
        ),
        (
            "data.npy",
            npy::write_f32(&[m.nnz()], &vec![1.0; m.nnz()]),
            deflated,
        ),
    ];
    for (name, bytes, opts) in members {
        // Writing to an in-memory buffer cannot fail.
        zip.start_file(name, opts).expect("in-memory zip");
        zip.write_all(&bytes).expect("in-memory zip");
    }
    zip.finish().expect("in-memory zip").into_inner()
}

/// Crafted files for tests (this crate's, or other crates' with the `test-hooks`
/// feature).
#[cfg(any(test, feature = "test-hooks"))]
pub mod hooks {
    use super::*;

    /// A valid CSR npz whose members carry zip64 size fields, with every member's
    /// claimed uncompressed size patched to `claim` (the bytes stay as they are).
    pub fn lying_npz(claim: u64) -> Vec<u8> {
        let m = CsrPattern::from_rows(5, vec![vec![3, 1], vec![], vec![4, 0, 4]]);
        let honest = write_csr(&m);
        // Rewrite the members with zip64 extra fields (large_file), stored.
        let mut src = zip::ZipArchive::new(Cursor::new(&honest[..])).unwrap();
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true);
        let mut sizes = Vec::new();
        for i in 0..src.len() {
            let mut f = src.by_index(i).unwrap();
            let name = f.name().to_string();
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).unwrap();
            sizes.push(bytes.len() as u64);
            out.start_file(name, opts).unwrap();
            out.write_all(&bytes).unwrap();
        }
        let mut z = out.finish().unwrap().into_inner();
        // Patch each zip64 extra (id 0x0001) whose first field is a member's size.
        let mut i = 0;
        while i + 12 <= z.len() {
            if z[i..i + 2] == [1, 0] {
                let v = u64::from_le_bytes(z[i + 4..i + 12].try_into().unwrap());
                if sizes.contains(&v) && v > 0 {
                    z[i + 4..i + 12].copy_from_slice(&claim.to_le_bytes());
                    i += 12;
                    continue;
                }
            }
            i += 1;
        }
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_claiming_64_gib_allocates_nothing_of_it() {
        let z = hooks::lying_npz(64 << 30);
        // The fuzz seed tests/fuzz/seeds/npz/claims-64gib is this file.
        if let Some(path) = std::env::var_os("RECS_WRITE_FUZZ_SEED") {
            std::fs::write(path, &z).unwrap();
        }
        // The archive opens and its members claim 64 GiB (what used to be allocated).
        let mut zip = zip::ZipArchive::new(Cursor::new(&z[..])).unwrap();
        assert_eq!(zip.by_name("indices.npy").unwrap().size(), 64 << 30);
        // The claim reached the reader (or the zip crate refused the archive itself);
        // either way no 64 GiB allocation is attempted and the answer is an error or
        // the honest matrix, never an abort.
        match read_csr(&z) {
            Ok(m) => assert_eq!(m.rows, 3),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn inflation_is_capped_at_the_archive_size_times_the_ratio() {
        assert_eq!(member_limit(1000), 1000 * MAX_INFLATION);
        // A member that inflates past the limit: 4 MiB of zeros deflate to ~4 KiB,
        // over 1032x the archive once the archive is that small.
        let zeros = vec![0u8; 4 << 20];
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let deflated = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(9));
        out.start_file("format.npy", deflated).unwrap();
        out.write_all(&zeros).unwrap();
        let z = out.finish().unwrap().into_inner();
        let mut zip = zip::ZipArchive::new(Cursor::new(&z[..])).unwrap();
        let limit = (z.len() as u64) * 100; // a tighter ratio shows the check works
        assert!(matches!(
            member(&mut zip, "format.npy", limit),
            Err(NpzError::TooLarge {
                member: "format.npy",
                ..
            })
        ));
        let limit = zeros.len() as u64;
        assert_eq!(
            member(&mut zip, "format.npy", limit).unwrap().len(),
            zeros.len()
        );
    }

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

    /// A zip of the given members, every one compressed with `method`.
    fn zip_of(members: &[(&str, Vec<u8>)], method: zip::CompressionMethod) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, bytes) in members {
            zip.start_file(*name, opts).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    /// scipy's members for a 2 x 4 matrix with these rows (as written, unsorted and
    /// with duplicates allowed), `data` as given.
    fn scipy_members(
        indptr: &[i32],
        indices: &[i32],
        data: Vec<u8>,
    ) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("indices.npy", npy::write_i32(&[indices.len()], indices)),
            ("indptr.npy", npy::write_i32(&[indptr.len()], indptr)),
            ("format.npy", npy::write_bytes_scalar(b"csr")),
            ("shape.npy", npy::write_i64(&[2], &[2, 4])),
            ("data.npy", data),
        ]
    }

    #[test]
    fn reads_deflated_files_with_unsorted_and_repeated_columns() {
        // What scipy's save_npz (compressed=True, the default) writes for a matrix
        // whose rows were never sorted: row 0 = [3, 1, 3], row 1 = [2, 0].
        let members = scipy_members(
            &[0, 3, 5],
            &[3, 1, 3, 2, 0],
            npy::write_f32(&[5], &[1.0; 5]),
        );
        let m = read_csr(&zip_of(&members, zip::CompressionMethod::Deflated)).unwrap();
        assert_eq!(m.indptr, vec![0, 2, 4]);
        assert_eq!(m.indices, vec![1, 3, 0, 2]);
        assert_eq!((m.rows, m.cols, m.data.len()), (2, 4, 4));
        // The same arrays stored uncompressed read the same.
        let stored = read_csr(&zip_of(&members, zip::CompressionMethod::Stored)).unwrap();
        assert_eq!(stored, m);
    }

    #[test]
    fn data_member_is_checked_though_not_kept() {
        let file = |data| {
            zip_of(
                &scipy_members(&[0, 1, 2], &[1, 2], data),
                zip::CompressionMethod::Deflated,
            )
        };
        // The values are not read; only their dtype and count matter.
        assert!(read_csr(&file(npy::write_f32(&[2], &[1.0, 1.0]))).is_ok());
        let err = read_csr(&file(npy::write_f32(&[3], &[1.0; 3]))).unwrap_err();
        assert!(err.to_string().contains("3 values for 2 indices"), "{err}");
        let err = read_csr(&file(npy::write_i32(&[2], &[1, 1]))).unwrap_err();
        assert!(err.to_string().contains("<i4"), "{err}");
        let mut short = npy::write_f32(&[2], &[1.0, 1.0]);
        short.pop();
        assert!(matches!(
            read_csr(&file(short)),
            Err(NpzError::Npy {
                member: "data.npy",
                source: NpyError::TruncatedData { .. }
            })
        ));
        let mut z = zip_of(
            &scipy_members(&[0, 1, 2], &[1, 2], npy::write_f32(&[2], &[1.0, 1.0])),
            zip::CompressionMethod::Deflated,
        );
        z.truncate(z.len() - 30);
        assert!(read_csr(&z).is_err());
    }

    #[test]
    fn int64_indices_are_read_and_checked() {
        let mut members = scipy_members(&[0, 1, 2], &[1, 2], npy::write_f32(&[2], &[1.0, 1.0]));
        members[0].1 = npy::write_i64(&[2], &[3, 0]);
        let m = read_csr(&zip_of(&members, zip::CompressionMethod::Deflated)).unwrap();
        assert_eq!(m.indices, vec![3, 0]);
        members[0].1 = npy::write_i64(&[2], &[4, 0]);
        let err = read_csr(&zip_of(&members, zip::CompressionMethod::Deflated)).unwrap_err();
        assert!(
            err.to_string().contains("column index 4 outside 0..4"),
            "{err}"
        );
        members[0].1 = npy::write_i32(&[2], &[-1, 0]);
        let err = read_csr(&zip_of(&members, zip::CompressionMethod::Stored)).unwrap_err();
        assert!(
            err.to_string().contains("column index -1 outside 0..4"),
            "{err}"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Rows as scipy may hold them (any order, repeats), through a stored or a
            /// deflated file: each row reads back as its sorted set of columns.
            #[test]
            fn unsorted_rows_read_as_sorted_sets(
                rows in prop::collection::vec(prop::collection::vec(0u32..9, 0..7), 0..10),
                deflate in any::<bool>(),
            ) {
                let mut indptr = vec![0i32];
                let mut indices = Vec::new();
                for r in &rows {
                    indices.extend(r.iter().map(|&c| c as i32));
                    indptr.push(indices.len() as i32);
                }
                let members = vec![
                    ("indices.npy", npy::write_i32(&[indices.len()], &indices)),
                    ("indptr.npy", npy::write_i32(&[indptr.len()], &indptr)),
                    ("format.npy", npy::write_bytes_scalar(b"csr")),
                    ("shape.npy", npy::write_i64(&[2], &[rows.len() as i64, 9])),
                    ("data.npy", npy::write_f32(&[indices.len()], &vec![1.0; indices.len()])),
                ];
                let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
                let m = read_csr(&zip_of(&members, method)).unwrap();
                prop_assert_eq!(m.rows, rows.len());
                for (i, r) in rows.iter().enumerate() {
                    let want: Vec<u32> = r.iter().copied().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
                    prop_assert_eq!(m.row(i), &want[..]);
                }
                prop_assert_eq!(m.data.len(), m.indices.len());
            }
        }

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
