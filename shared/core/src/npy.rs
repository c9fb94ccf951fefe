//! NumPy `.npy` files (format 1.0-3.0, little-endian, C order): the array format
//! of the Python team's registry. Reading refuses anything we would misinterpret
//! (another dtype, Fortran order, a truncated body) instead of guessing.

use std::fmt;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Why a `.npy` file was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NpyError {
    /// The file does not start with the `\x93NUMPY` magic.
    #[error("not a .npy file (bad magic bytes)")]
    BadMagic,
    /// The file ends before its header does (the file's length in bytes).
    #[error("truncated header: file has {0} bytes")]
    TruncatedHeader(usize),
    /// The format's major version is not 1, 2 or 3 (major, minor).
    #[error("unsupported .npy format version {0}.{1}")]
    UnsupportedVersion(u8, u8),
    /// The header dict is not text or cannot be parsed (the header text).
    #[error("malformed header {0:?}")]
    BadHeader(String),
    /// The element type is unsupported, or not the one the reader asked for.
    #[error("dtype {found} is not supported here (expected {expected})")]
    WrongDtype {
        /// The `descr` found in the file.
        found: String,
        /// The `descr`s the reader accepts.
        expected: String,
    },
    /// A multi-dimensional array stored in Fortran (column-major) order.
    #[error("array is stored in Fortran order; only C order is supported")]
    FortranOrder,
    /// The array does not have the required number of dimensions.
    #[error("expected a {expected}-dimensional array, found shape {found:?}")]
    WrongRank {
        /// The required number of dimensions.
        expected: usize,
        /// The shape found in the file.
        found: Vec<usize>,
    },
    /// The body is shorter than the header's shape and dtype need.
    #[error("truncated data: shape {shape:?} of {dtype} needs {needed} bytes, file has {found}")]
    TruncatedData {
        /// The header's shape.
        shape: Vec<usize>,
        /// The header's `descr`.
        dtype: String,
        /// Bytes of data the shape needs.
        needed: usize,
        /// Bytes of data after the header.
        found: usize,
    },
    /// The body is longer than the header's shape and dtype need.
    #[error("{extra} unexpected bytes after the array data")]
    TrailingData {
        /// Bytes past the end of the array data.
        extra: usize,
    },
}

/// Element types we read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// Little-endian 32-bit float (`<f4`).
    F32,
    /// Little-endian 64-bit float (`<f8`).
    F64,
    /// Little-endian 32-bit signed integer (`<i4`).
    I32,
    /// Little-endian 64-bit signed integer (`<i8`).
    I64,
    /// Fixed-width byte string, e.g. `|S3` (scipy's `format.npy`).
    Bytes(usize),
}

impl Dtype {
    fn parse(descr: &str) -> Option<Self> {
        // '=' means native order, which numpy only writes on the machine that made it;
        // all our targets are little-endian, so it reads as '<'.
        let descr = descr.replacen('=', "<", 1);
        Some(match descr.as_str() {
            "<f4" => Dtype::F32,
            "<f8" => Dtype::F64,
            "<i4" => Dtype::I32,
            "<i8" => Dtype::I64,
            s if s.starts_with("|S") => Dtype::Bytes(s[2..].parse().ok()?),
            _ => return None,
        })
    }

    /// The numpy `descr` string.
    fn descr(&self) -> String {
        match self {
            Dtype::F32 => "<f4".into(),
            Dtype::F64 => "<f8".into(),
            Dtype::I32 => "<i4".into(),
            Dtype::I64 => "<i8".into(),
            Dtype::Bytes(n) => format!("|S{n}"),
        }
    }

    /// Bytes per element.
    pub fn size(&self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::Bytes(n) => *n,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.descr())
    }
}

/// A parsed header plus the byte range of the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Element type, from `descr`.
    pub dtype: Dtype,
    /// Dimensions, from `shape`; empty for a 0-d scalar.
    pub shape: Vec<usize>,
    /// Byte offset in the file where the array data starts.
    pub data_offset: usize,
}

impl Header {
    /// Number of elements: the shape's product (1 for a scalar).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when some dimension is 0, so there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses the header of a `.npy` file and checks that the body has exactly the bytes
/// the shape needs.
pub fn parse_header(bytes: &[u8]) -> Result<Header, NpyError> {
    parse_header_of(bytes, bytes.len())
}

/// [`parse_header`] from a file's first bytes (the whole header at least) when the
/// whole file is `file_len` bytes: for a member whose values are never needed, only
/// its length (scipy's `data.npy`), so they need not be held in memory.
pub fn parse_header_of(bytes: &[u8], file_len: usize) -> Result<Header, NpyError> {
    if bytes.len() < 10 {
        return Err(if bytes.len() >= 6 && &bytes[..6] != MAGIC {
            NpyError::BadMagic
        } else {
            NpyError::TruncatedHeader(bytes.len())
        });
    }
    if &bytes[..6] != MAGIC {
        return Err(NpyError::BadMagic);
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(NpyError::TruncatedHeader(bytes.len()));
            }
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (len as usize, 12)
        }
        _ => return Err(NpyError::UnsupportedVersion(major, minor)),
    };
    let data_offset = start + header_len;
    if bytes.len() < data_offset {
        return Err(NpyError::TruncatedHeader(bytes.len()));
    }
    let text = std::str::from_utf8(&bytes[start..data_offset])
        .map_err(|_| NpyError::BadHeader("header is not text".into()))?;
    let bad = || NpyError::BadHeader(text.trim_end().to_string());

    let descr = dict_value(text, "descr")
        .and_then(|v| v.strip_prefix('\'')?.split('\'').next())
        .ok_or_else(bad)?;
    let fortran = dict_value(text, "fortran_order").ok_or_else(bad)?;
    let shape_text = dict_value(text, "shape").ok_or_else(bad)?;
    let shape_inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(bad)?;
    let shape = shape_inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad())?;

    if fortran.starts_with("True") {
        // A 0-d or 1-d array is the same in both orders; numpy still writes False for them.
        if shape.len() > 1 {
            return Err(NpyError::FortranOrder);
        }
    } else if !fortran.starts_with("False") {
        return Err(bad());
    }
    let dtype = Dtype::parse(descr).ok_or_else(|| NpyError::WrongDtype {
        found: descr.to_string(),
        expected: "<f4, <f8, <i4, <i8 or |S<n>".into(),
    })?;
    // The element count must fit too, not only the byte count: with a zero-width
    // dtype (|S0) the bytes are 0 whatever the shape.
    let elements = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(bad)?;
    let needed = elements.checked_mul(dtype.size()).ok_or_else(bad)?;
    let found = file_len.saturating_sub(data_offset);
    if found < needed {
        return Err(NpyError::TruncatedData {
            shape,
            dtype: dtype.descr(),
            needed,
            found,
        });
    }
    if found > needed {
        return Err(NpyError::TrailingData {
            extra: found - needed,
        });
    }
    Ok(Header {
        dtype,
        shape,
        data_offset,
    })
}

/// The text after `'key':` in a Python dict literal.
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let at = text.find(&pat)? + pat.len();
    Some(text[at..].trim_start())
}

/// A decoded array: its shape and elements in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array<T> {
    /// Dimensions, from the header.
    pub shape: Vec<usize>,
    /// Elements in C (row-major) order, as many as the shape's product.
    pub data: Vec<T>,
}

fn decode<T, const N: usize>(
    bytes: &[u8],
    want: Dtype,
    from_le: fn([u8; N]) -> T,
) -> Result<Array<T>, NpyError> {
    let h = parse_header(bytes)?;
    if h.dtype != want {
        return Err(NpyError::WrongDtype {
            found: h.dtype.descr(),
            expected: want.descr(),
        });
    }
    // The single copy of a load: file bytes into typed, aligned elements.
    let data = bytes[h.data_offset..]
        .chunks_exact(N)
        .map(|c| from_le(c.try_into().expect("chunks_exact yields N bytes")))
        .collect();
    Ok(Array {
        shape: h.shape,
        data,
    })
}

/// Reads a float32 array (`<f4`), any rank.
pub fn read_f32(bytes: &[u8]) -> Result<Array<f32>, NpyError> {
    decode(bytes, Dtype::F32, f32::from_le_bytes)
}

/// Reads an int32 array (`<i4`), any rank.
pub fn read_i32(bytes: &[u8]) -> Result<Array<i32>, NpyError> {
    decode(bytes, Dtype::I32, i32::from_le_bytes)
}

/// Reads an integer array of `<i4` or `<i8` as i64.
pub fn read_int(bytes: &[u8]) -> Result<Array<i64>, NpyError> {
    match parse_header(bytes)?.dtype {
        Dtype::I32 => {
            let a = decode(bytes, Dtype::I32, i32::from_le_bytes)?;
            Ok(Array {
                shape: a.shape,
                data: a.data.into_iter().map(i64::from).collect(),
            })
        }
        Dtype::I64 => decode(bytes, Dtype::I64, i64::from_le_bytes),
        other => Err(NpyError::WrongDtype {
            found: other.descr(),
            expected: "<i4 or <i8".into(),
        }),
    }
}

/// Reads a float array of `<f4` or `<f8` as f64.
pub fn read_float(bytes: &[u8]) -> Result<Array<f64>, NpyError> {
    match parse_header(bytes)?.dtype {
        Dtype::F32 => {
            let a = read_f32(bytes)?;
            Ok(Array {
                shape: a.shape,
                data: a.data.into_iter().map(f64::from).collect(),
            })
        }
        Dtype::F64 => decode(bytes, Dtype::F64, f64::from_le_bytes),
        other => Err(NpyError::WrongDtype {
            found: other.descr(),
            expected: "<f4 or <f8".into(),
        }),
    }
}

/// Reads a byte-string scalar or array (`|S<n>`), returning the raw bytes.
pub fn read_bytes(bytes: &[u8]) -> Result<Vec<u8>, NpyError> {
    let h = parse_header(bytes)?;
    match h.dtype {
        Dtype::Bytes(_) => Ok(bytes[h.data_offset..].to_vec()),
        other => Err(NpyError::WrongDtype {
            found: other.descr(),
            expected: "|S<n>".into(),
        }),
    }
}

/// Serialises a header the way numpy 1.x does: format 1.0, padded with spaces so the
/// data starts on a 64-byte boundary.
fn write_header(out: &mut Vec<u8>, dtype: Dtype, shape: &[usize]) {
    let shape_text = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        dtype.descr(),
        shape_text
    );
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    dict.push('\n');
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
}

/// Encodes a float32 array.
pub fn write_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "shape/data mismatch"
    );
    let mut out = Vec::with_capacity(128 + data.len() * 4);
    write_header(&mut out, Dtype::F32, shape);
    data.iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    out
}

/// Encodes an int32 array.
pub fn write_i32(shape: &[usize], data: &[i32]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "shape/data mismatch"
    );
    let mut out = Vec::with_capacity(128 + data.len() * 4);
    write_header(&mut out, Dtype::I32, shape);
    data.iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    out
}

/// Encodes an int64 array.
pub fn write_i64(shape: &[usize], data: &[i64]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "shape/data mismatch"
    );
    let mut out = Vec::with_capacity(128 + data.len() * 8);
    write_header(&mut out, Dtype::I64, shape);
    data.iter()
        .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    out
}

/// Encodes a byte-string scalar (`|S<n>`, shape `()`).
pub fn write_bytes_scalar(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_header(&mut out, Dtype::Bytes(value.len()), &[]);
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header numpy 1.26 writes for `np.zeros((2, 3), np.float32)`.
    fn numpy_header(descr: &str, fortran: &str, shape: &str) -> Vec<u8> {
        let mut dict =
            format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
        dict.push_str(&" ".repeat(117 - dict.len()));
        dict.push('\n');
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&[1, 0]);
        v.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        v.extend_from_slice(dict.as_bytes());
        v
    }

    #[test]
    fn round_trips_f32_matrix() {
        let data = vec![1.0, -2.5, 3.25, 0.0, f32::MIN_POSITIVE, 7.0];
        let bytes = write_f32(&[2, 3], &data);
        let offset = parse_header(&bytes).unwrap().data_offset;
        assert_eq!(offset % 64, 0, "data starts on a 64-byte boundary");
        let a = read_f32(&bytes).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, data);
    }

    #[test]
    fn reads_numpy_written_header() {
        let mut bytes = numpy_header("<f4", "False", "(2, 1)");
        assert_eq!(bytes.len(), 128);
        bytes.extend_from_slice(&1.5f32.to_le_bytes());
        bytes.extend_from_slice(&(-1.0f32).to_le_bytes());
        let a = read_f32(&bytes).unwrap();
        assert_eq!((a.shape, a.data), (vec![2, 1], vec![1.5, -1.0]));
    }

    #[test]
    fn refuses_other_dtypes_and_orders() {
        let mut f8 = numpy_header("<f8", "False", "(1,)");
        f8.extend_from_slice(&1.0f64.to_le_bytes());
        assert!(matches!(read_f32(&f8), Err(NpyError::WrongDtype { .. })));
        assert_eq!(read_float(&f8).unwrap().data, vec![1.0]);

        let mut be = numpy_header(">f4", "False", "(1,)");
        be.extend_from_slice(&[0; 4]);
        assert!(matches!(read_f32(&be), Err(NpyError::WrongDtype { .. })));

        let mut fortran = numpy_header("<f4", "True", "(2, 2)");
        fortran.extend_from_slice(&[0; 16]);
        assert_eq!(read_f32(&fortran), Err(NpyError::FortranOrder));
    }

    #[test]
    fn refuses_truncated_and_garbage() {
        let bytes = write_f32(&[4, 4], &[0.5; 16]);
        let err = read_f32(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(
            matches!(
                err,
                NpyError::TruncatedData {
                    needed: 64,
                    found: 61,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("[4, 4]"), "{err}");
        assert_eq!(read_f32(&bytes[..40]), Err(NpyError::TruncatedHeader(40)));
        assert_eq!(
            read_f32(b"PK\x03\x04 not numpy at all"),
            Err(NpyError::BadMagic)
        );
        assert_eq!(read_f32(b""), Err(NpyError::TruncatedHeader(0)));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(read_f32(&long), Err(NpyError::TrailingData { extra: 1 }));
    }

    #[test]
    fn ints_widen_and_scalars_read() {
        let a = read_int(&write_i32(&[3], &[1, -2, 3])).unwrap();
        assert_eq!(a.data, vec![1, -2, 3]);
        let b = read_int(&write_i64(&[2], &[i64::MAX, 0])).unwrap();
        assert_eq!(b.data, vec![i64::MAX, 0]);
        assert_eq!(read_bytes(&write_bytes_scalar(b"csr")).unwrap(), b"csr");
        assert!(read_int(&write_f32(&[1], &[1.0])).is_err());
    }

    #[test]
    fn zero_width_elements_with_a_huge_shape_are_refused() {
        // |S0 needs 0 bytes whatever the shape, so the byte count alone let a shape
        // whose element count overflows usize through (and Header::len() panicked).
        let mut bytes = numpy_header("|S0", "False", "(4294967296, 4294967296, 16)");
        assert!(matches!(parse_header(&bytes), Err(NpyError::BadHeader(_))));
        bytes = numpy_header("|S0", "False", "(3, 2)");
        assert_eq!(parse_header(&bytes).unwrap().len(), 6);
    }

    #[test]
    fn huge_shape_does_not_overflow() {
        let mut bytes = numpy_header("<f4", "False", "(18446744073709551615, 4)");
        bytes.extend_from_slice(&[0; 8]);
        assert!(matches!(read_f32(&bytes), Err(NpyError::BadHeader(_))));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// A shape of rank 0..=3 with at most 64 elements.
        fn shape() -> impl Strategy<Value = Vec<usize>> {
            prop::collection::vec(0usize..5, 0..=3)
        }

        /// Applies `edits` (position, new byte) and a truncation to `bytes`.
        fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
            for &(at, b) in edits {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = b;
                }
            }
            bytes.truncate(bytes.len().saturating_sub(cut));
            bytes
        }

        /// Every reader on `bytes`: none may panic; an accepted header's element
        /// count must be computable (no overflow) and match the data it returns.
        fn read_all(bytes: &[u8]) {
            if let Ok(h) = parse_header(bytes) {
                let n = h.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                assert!(n.is_some(), "accepted shape {:?} overflows", h.shape);
                assert!(h.data_offset <= bytes.len());
            }
            if let Ok(a) = read_f32(bytes) {
                assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
            }
            if let Ok(a) = read_int(bytes) {
                assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
            }
            if let Ok(a) = read_float(bytes) {
                assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
            }
            let _ = read_bytes(bytes);
        }

        proptest! {
            #[test]
            fn f32_round_trips(shape in shape(), seed in any::<u64>()) {
                let n: usize = shape.iter().product();
                // Any bit pattern, NaNs included: compared bit for bit.
                let data: Vec<f32> = (0..n as u64)
                    .map(|i| f32::from_bits(crate::hash::splitmix64(seed ^ i) as u32))
                    .collect();
                let a = read_f32(&write_f32(&shape, &data)).unwrap();
                prop_assert_eq!(&a.shape, &shape);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&a.data), bits(&data));
            }

            #[test]
            fn ints_round_trip(shape in shape(), seed in any::<u64>()) {
                let n: usize = shape.iter().product();
                let data: Vec<i64> = (0..n as u64)
                    .map(|i| crate::hash::splitmix64(seed ^ i) as i64)
                    .collect();
                let a = read_int(&write_i64(&shape, &data)).unwrap();
                prop_assert_eq!((&a.shape, &a.data), (&shape, &data));
                let narrow: Vec<i32> = data.iter().map(|&v| v as i32).collect();
                let b = read_int(&write_i32(&shape, &narrow)).unwrap();
                let widened: Vec<i64> = narrow.iter().map(|&v| i64::from(v)).collect();
                prop_assert_eq!(b.data, widened);
            }

            #[test]
            fn byte_scalars_round_trip(value in prop::collection::vec(any::<u8>(), 0..40)) {
                prop_assert_eq!(read_bytes(&write_bytes_scalar(&value)).unwrap(), value);
            }

            #[test]
            fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
                read_all(&bytes);
                // The same bytes behind a valid magic and version reach the header parser.
                let mut framed = MAGIC.to_vec();
                framed.extend_from_slice(&[1, 0, bytes.len() as u8, 0]);
                framed.extend_from_slice(&bytes);
                read_all(&framed);
            }

            #[test]
            fn mutated_files_never_panic(
                shape in shape(),
                edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                cut in 0usize..20,
            ) {
                let n: usize = shape.iter().product();
                let file = write_f32(&shape, &vec![1.5; n]);
                read_all(&mutate(file, &edits, cut));
            }

            #[test]
            fn hostile_header_text_is_refused_or_consistent(
                descr in "(<f4|<f8|<i4|<i8|\\|S[0-9]{1,3}|[ -~]{0,6})",
                fortran in "(True|False|[ -~]{0,5})",
                dims in prop::collection::vec("[0-9]{1,21}L?", 0..4),
                body in 0usize..64,
            ) {
                let shape = format!("({})", dims.join(", "));
                let dict = format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}\n");
                let mut file = MAGIC.to_vec();
                file.extend_from_slice(&[1, 0]);
                file.extend_from_slice(&(dict.len() as u16).to_le_bytes());
                file.extend_from_slice(dict.as_bytes());
                file.extend(std::iter::repeat_n(0u8, body));
                read_all(&file);
            }
        }
    }
}
