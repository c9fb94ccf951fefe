//! A pickle reader that executes nothing: it accepts only the opcodes that build
//! plain lists, ints and strings (protocols 2 to 5, as Python 3 writes them) and
//! refuses everything else by name. The Python team's `v_popularity/model.pkl` is a
//! pickled list of movie ids (seed-system.md §2.5); `pickle.load` on an untrusted
//! file runs arbitrary code through class references (`GLOBAL`, `STACK_GLOBAL`) and
//! calls (`REDUCE`), so those are exactly what this reader never does.

/// Why a pickle was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PickleError {
    /// The data ends inside an opcode or before `STOP`.
    #[error("pickle is truncated at byte {0}")]
    Truncated(usize),
    /// A class reference: loading it would import and call Python code.
    #[error(
        "pickle refers to a class or function ({opcode} at byte {offset}); only plain lists, ints and strings are read, nothing is executed"
    )]
    ClassReference {
        /// The opcode's name (`GLOBAL`, `STACK_GLOBAL`, `INST`, `OBJ`).
        opcode: &'static str,
        /// Its offset in the data.
        offset: usize,
    },
    /// A call or object construction (`REDUCE`, `NEWOBJ`, `BUILD`...).
    #[error(
        "pickle calls or builds an object ({opcode} at byte {offset}); only plain lists, ints and strings are read, nothing is executed"
    )]
    Call {
        /// The opcode's name.
        opcode: &'static str,
        /// Its offset in the data.
        offset: usize,
    },
    /// Any other opcode outside the allow-list (floats, dicts, bytes, protocol 0/1...).
    #[error("unsupported pickle opcode 0x{opcode:02x} at byte {offset}: only plain lists, ints and strings are read")]
    Unsupported {
        /// The opcode byte.
        opcode: u8,
        /// Its offset in the data.
        offset: usize,
    },
    /// The opcodes are allowed but do not form a value (stack or memo misuse).
    #[error("malformed pickle at byte {offset}: {reason}")]
    Malformed {
        /// Where it went wrong.
        offset: usize,
        /// What went wrong.
        reason: String,
    },
    /// The pickle holds a valid value of another shape than the caller needs.
    #[error("pickle holds {0}, expected a list of integer ids")]
    WrongShape(String),
}

/// A value built from an allowed pickle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickleValue {
    /// A Python int that fits in i64.
    Int(i64),
    /// A Python str.
    Str(String),
    /// A Python list.
    List(Vec<PickleValue>),
}

/// The deepest list nesting read. The Python team's files are flat lists; a bound
/// keeps every later walk of the value (drop, clone, compare) shallow, so a crafted
/// file of ~80 KB nesting 40,000 lists cannot overflow the stack.
pub const MAX_DEPTH: u32 = 64;

enum Slot {
    /// A value and its list depth (0 for a scalar, 1 for a flat list).
    Value(PickleValue, u32),
    Mark,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated(self.data.len()))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

/// Parses a pickle built only from lists, ints and strings. Refuses every other
/// opcode without acting on it.
pub fn read(data: &[u8]) -> Result<PickleValue, PickleError> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: std::collections::HashMap<u64, Memo> = Default::default();
    // Bytes of strings copied into and out of the memo so far (MAX_MEMO_COPY_BYTES).
    let mut copied = 0usize;
    loop {
        let at = r.pos;
        let op = r.u8()?;
        let malformed = |reason: &str| PickleError::Malformed {
            offset: at,
            reason: reason.to_string(),
        };
        match op {
            0x80 => {
                // PROTO
                let p = r.u8()?;
                if !(2..=5).contains(&p) {
                    return Err(malformed(&format!("protocol {p}; 2 to 5 are read")));
                }
            }
            0x95 => {
                // FRAME: a length hint only.
                r.u64()?;
            }
            b']' => stack.push(Slot::Value(PickleValue::List(Vec::new()), 1)),
            b'(' => stack.push(Slot::Mark),
            b'K' => stack.push(Slot::Value(PickleValue::Int(r.u8()? as i64), 0)),
            b'M' => {
                let b = r.take(2)?;
                stack.push(Slot::Value(
                    PickleValue::Int(u16::from_le_bytes([b[0], b[1]]) as i64),
                    0,
                ));
            }
            b'J' => stack.push(Slot::Value(PickleValue::Int(r.u32()? as i32 as i64), 0)),
            0x8a | 0x8b => {
                // LONG1 / LONG4: little-endian two's complement of n bytes.
                let n = if op == 0x8a {
                    r.u8()? as usize
                } else {
                    r.u32()? as usize
                };
                let bytes = r.take(n)?;
                stack.push(Slot::Value(
                    PickleValue::Int(
                        long(bytes).ok_or_else(|| malformed("integer does not fit in 64 bits"))?,
                    ),
                    0,
                ));
            }
            0x8c | b'X' | 0x8d => {
                // SHORT_BINUNICODE / BINUNICODE / BINUNICODE8
                let n = match op {
                    0x8c => r.u8()? as u64,
                    b'X' => r.u32()? as u64,
                    _ => r.u64()?,
                };
                let n = usize::try_from(n).map_err(|_| PickleError::Truncated(data.len()))?;
                let s = std::str::from_utf8(r.take(n)?)
                    .map_err(|_| malformed("string is not UTF-8"))?;
                stack.push(Slot::Value(PickleValue::Str(s.to_string()), 0));
            }
            0x94 | b'q' | b'r' => {
                // MEMOIZE / BINPUT / LONG_BINPUT
                let key = match op {
                    0x94 => memo.len() as u64,
                    b'q' => r.u8()? as u64,
                    _ => r.u32()? as u64,
                };
                let entry = match stack.last() {
                    // Never read back (BINGET of a list is refused): no copy kept.
                    Some(Slot::Value(PickleValue::List(_), _)) => Memo::List,
                    Some(Slot::Value(v, _)) => Memo::Value(v.clone()),
                    _ => return Err(malformed("memoize with no value on the stack")),
                };
                if let Memo::Value(PickleValue::Str(s)) = &entry {
                    copy_budget(&mut copied, s.len()).map_err(|e| malformed(&e))?;
                }
                memo.insert(key, entry);
            }
            b'h' | b'j' => {
                // BINGET / LONG_BINGET
                let key = if op == b'h' {
                    r.u8()? as u64
                } else {
                    r.u32()? as u64
                };
                match memo.get(&key) {
                    // A memoized list is a shared (maybe recursive) reference; a copy
                    // would silently differ from what Python builds.
                    Some(Memo::List) | Some(Memo::Value(PickleValue::List(_))) => {
                        return Err(malformed("shared list references are not read"))
                    }
                    Some(Memo::Value(v)) => {
                        if let PickleValue::Str(s) = v {
                            copy_budget(&mut copied, s.len()).map_err(|e| malformed(&e))?;
                        }
                        stack.push(Slot::Value(v.clone(), 0))
                    }
                    None => return Err(malformed(&format!("memo {key} is not defined"))),
                }
            }
            b'a' => {
                let (v, d) =
                    pop_value(&mut stack).ok_or_else(|| malformed("APPEND without a value"))?;
                match stack.last_mut() {
                    Some(Slot::Value(PickleValue::List(l), depth)) => {
                        *depth = nest(*depth, d).ok_or_else(|| malformed(&too_deep()))?;
                        l.push(v)
                    }
                    _ => return Err(malformed("APPEND to something that is not a list")),
                }
            }
            b'e' => {
                let mark = stack
                    .iter()
                    .rposition(|s| matches!(s, Slot::Mark))
                    .ok_or_else(|| malformed("APPENDS without a MARK"))?;
                let mut deepest = 0;
                let items: Vec<PickleValue> = stack
                    .drain(mark..)
                    .skip(1)
                    .filter_map(|s| match s {
                        Slot::Value(v, d) => {
                            deepest = deepest.max(d);
                            Some(v)
                        }
                        // rposition found the last mark: no other follows it.
                        Slot::Mark => None,
                    })
                    .collect();
                match stack.last_mut() {
                    Some(Slot::Value(PickleValue::List(l), depth)) => {
                        *depth = nest(*depth, deepest).ok_or_else(|| malformed(&too_deep()))?;
                        l.extend(items)
                    }
                    _ => return Err(malformed("APPENDS to something that is not a list")),
                }
            }
            b'.' => {
                let (v, _) =
                    pop_value(&mut stack).ok_or_else(|| malformed("STOP with no value"))?;
                if !stack.is_empty() {
                    return Err(malformed("values left on the stack at STOP"));
                }
                return Ok(v);
            }
            b'c' | 0x93 | b'i' | b'o' => {
                return Err(PickleError::ClassReference {
                    opcode: match op {
                        b'c' => "GLOBAL",
                        0x93 => "STACK_GLOBAL",
                        b'i' => "INST",
                        _ => "OBJ",
                    },
                    offset: at,
                })
            }
            b'R' | 0x81 | 0x92 | b'b' | 0x82 | 0x83 | 0x84 | b'P' | b'Q' => {
                return Err(PickleError::Call {
                    opcode: match op {
                        b'R' => "REDUCE",
                        0x81 => "NEWOBJ",
                        0x92 => "NEWOBJ_EX",
                        b'b' => "BUILD",
                        0x82..=0x84 => "EXT",
                        b'P' => "PERSID",
                        _ => "BINPERSID",
                    },
                    offset: at,
                })
            }
            other => {
                return Err(PickleError::Unsupported {
                    opcode: other,
                    offset: at,
                })
            }
        }
    }
}

/// What the memo keeps for one key.
enum Memo {
    /// A list: only its existence (reading it back is refused, so no copy is kept).
    List,
    /// An int or a string, copied on every read.
    Value(PickleValue),
}

/// At most this many bytes of strings are copied into and out of the memo. Python
/// shares one object per memo reference; this reader copies, so without a cap a
/// 64 KiB pickle referencing a 32 KiB string thousands of times would build
/// gigabytes (found while writing the fuzz target for this reader).
const MAX_MEMO_COPY_BYTES: usize = 64 << 20;

fn copy_budget(copied: &mut usize, n: usize) -> Result<(), String> {
    *copied = copied.saturating_add(n);
    if *copied > MAX_MEMO_COPY_BYTES {
        return Err(format!(
            "memo references copy more than {} MiB of strings",
            MAX_MEMO_COPY_BYTES >> 20
        ));
    }
    Ok(())
}

fn pop_value(stack: &mut Vec<Slot>) -> Option<(PickleValue, u32)> {
    match stack.pop()? {
        Slot::Value(v, d) => Some((v, d)),
        Slot::Mark => None,
    }
}

/// A list of depth `outer` after a value of depth `inner` is appended to it, unless
/// that is deeper than [`MAX_DEPTH`].
fn nest(outer: u32, inner: u32) -> Option<u32> {
    let d = outer.max(inner.saturating_add(1));
    (d <= MAX_DEPTH).then_some(d)
}

fn too_deep() -> String {
    format!("lists nested deeper than {MAX_DEPTH} levels")
}

/// Little-endian two's complement, as `pickle.encode_long` writes it.
fn long(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() {
        return Some(0);
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    // Bytes beyond the eighth must be pure sign extension.
    if bytes.len() > 8 {
        let fill = if negative { 0xff } else { 0 };
        if bytes[8..].iter().any(|&b| b != fill) {
            return None;
        }
    }
    let mut buf = [if negative { 0xff } else { 0 }; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    let v = i64::from_le_bytes(buf);
    // The sign of the truncated value must match the sign of the whole.
    ((v < 0) == negative).then_some(v)
}

/// Reads a pickled list of integer ids (ints, or strings holding an integer).
pub fn read_id_list(data: &[u8]) -> Result<Vec<i64>, PickleError> {
    match read(data)? {
        PickleValue::List(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                PickleValue::Int(n) => Ok(n),
                PickleValue::Str(s) => s.trim().parse().map_err(|_| {
                    PickleError::WrongShape(format!("a list whose entry {i} is the string {s:?}"))
                }),
                PickleValue::List(_) => Err(PickleError::WrongShape(format!(
                    "a list whose entry {i} is a list"
                ))),
            })
            .collect(),
        PickleValue::Int(n) => Err(PickleError::WrongShape(format!("the int {n}"))),
        PickleValue::Str(s) => Err(PickleError::WrongShape(format!("the string {s:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An encoder written from the pickle format description (not from the reader):
    /// protocol 2, BININT for every int, APPENDS in batches of 1000 like CPython.
    fn encode_p2(ids: &[i64]) -> Vec<u8> {
        let mut out = vec![0x80, 2, b']', b'q', 0];
        for chunk in ids.chunks(1000) {
            out.push(b'(');
            for &id in chunk {
                if (i32::MIN as i64..=i32::MAX as i64).contains(&id) {
                    out.push(b'J');
                    out.extend_from_slice(&(id as i32).to_le_bytes());
                } else {
                    out.extend_from_slice(&[0x8a, 8]);
                    out.extend_from_slice(&id.to_le_bytes());
                }
            }
            out.push(b'e');
        }
        out.push(b'.');
        out
    }

    /// `depth` nested lists: `[[[...]]]`, as `pickle.dumps` would write it
    /// without memo opcodes (EMPTY_LIST depth times, then APPEND depth - 1 times).
    fn nested(depth: usize) -> Vec<u8> {
        let mut p = b"\x80\x04".to_vec();
        p.extend(std::iter::repeat_n(b']', depth));
        p.extend(std::iter::repeat_n(b'a', depth - 1));
        p.push(b'.');
        p
    }

    #[test]
    fn nesting_is_bounded_and_deep_input_is_refused_without_recursion() {
        // At the limit: read (and dropped) fine; one more level: refused.
        let v = read(&nested(MAX_DEPTH as usize)).unwrap();
        let mut d = 0;
        let mut cur = &v;
        while let PickleValue::List(items) = cur {
            d += 1;
            match items.first() {
                Some(next) => cur = next,
                None => break,
            }
        }
        assert_eq!(d, MAX_DEPTH);
        assert!(matches!(
            read(&nested(MAX_DEPTH as usize + 1)),
            Err(PickleError::Malformed { ref reason, .. }) if reason.contains("nested deeper")
        ));
        // 200,000 levels (about 400 KB): refused at the 65th APPEND, no overflow.
        assert!(matches!(
            read_id_list(&nested(200_000)),
            Err(PickleError::Malformed { .. })
        ));
        // APPENDS (MARK ... e) counts its deepest item too.
        let mut p = b"\x80\x04".to_vec();
        p.extend(std::iter::repeat_n(b']', MAX_DEPTH as usize));
        p.extend(std::iter::repeat_n(b'a', MAX_DEPTH as usize - 1));
        let mut outer = b"\x80\x04](".to_vec();
        outer.extend_from_slice(&p[2..]);
        outer.extend_from_slice(b"e.");
        assert!(read(&outer).is_err());
    }

    #[test]
    fn hand_made_pickles() {
        // pickle.dumps([1, 300, -2, 2**40, "7"], protocol=2), bytes from CPython 3.11.
        let p = b"\x80\x02]q\x00(K\x01M,\x01J\xfe\xff\xff\xff\x8a\x06\x00\x00\x00\x00\x00\x01X\x01\x00\x00\x007q\x01e.";
        assert_eq!(
            read(p).unwrap(),
            PickleValue::List(vec![
                PickleValue::Int(1),
                PickleValue::Int(300),
                PickleValue::Int(-2),
                PickleValue::Int(1 << 40),
                PickleValue::Str("7".into()),
            ])
        );
        assert_eq!(read_id_list(p).unwrap(), vec![1, 300, -2, 1 << 40, 7]);
    }

    #[test]
    fn refuses_code() {
        // GLOBAL 'os system' then REDUCE: the classic exploit.
        let evil = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.";
        assert!(matches!(
            read(evil),
            Err(PickleError::ClassReference {
                opcode: "GLOBAL",
                offset: 2
            })
        ));
        // REDUCE on its own (no class reference before it).
        let call = b"\x80\x02]q\x00]q\x01R.";
        let err = read(call).unwrap_err();
        assert!(
            matches!(
                err,
                PickleError::Call {
                    opcode: "REDUCE",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("nothing is executed"));
        // Floats are outside the allow-list.
        assert!(matches!(
            read(b"\x80\x02G?\xf0\x00\x00\x00\x00\x00\x00."),
            Err(PickleError::Unsupported { opcode: b'G', .. })
        ));
        assert!(matches!(read(b"\x80\x02]"), Err(PickleError::Truncated(_))));
        assert!(matches!(
            read_id_list(b"\x80\x02K\x05."),
            Err(PickleError::WrongShape(_))
        ));
    }

    /// A list memoized after every APPEND (legal; CPython never writes it, but a
    /// file can): the reader copied the whole list into the memo each time, so
    /// 20,000 appends made 200 million copied entries (gigabytes). Now the memo
    /// keeps no copy of a list, and the list reads in full.
    #[test]
    fn a_list_memoized_after_every_append_is_read_without_copies() {
        let n = 20_000usize;
        let mut data = vec![0x80, 4, b']', 0x94];
        for i in 0..n {
            data.extend_from_slice(&[b'K', (i % 256) as u8, b'a', 0x94]);
        }
        data.push(b'.');
        let want: Vec<i64> = (0..n).map(|i| (i % 256) as i64).collect();
        assert_eq!(read_id_list(&data).unwrap(), want);
    }

    /// One 30 KB string referenced 20,000 times through BINGET: 600 MB of copies
    /// from a 70 KB file. Refused (typed) past the 64 MiB cap; a modest reuse reads.
    #[test]
    fn memo_string_amplification_is_refused() {
        let build = |len: usize, refs: usize| {
            let mut data = vec![0x80, 4, b']', b'('];
            data.push(b'X');
            data.extend_from_slice(&(len as u32).to_le_bytes());
            data.extend(std::iter::repeat_n(b'7', len));
            data.extend_from_slice(&[b'q', 0]);
            for _ in 0..refs {
                data.extend_from_slice(&[b'h', 0]);
            }
            data.extend_from_slice(b"e.");
            data
        };
        match read(&build(30_000, 20_000)) {
            Err(PickleError::Malformed { reason, .. }) => {
                assert!(reason.contains("copy more than 64 MiB"), "{reason}")
            }
            other => panic!("expected a refusal, got {:?}", other.map(|_| "a value")),
        }
        // 1 + 100 copies of "777": well under the cap, read as ids.
        let ids = read_id_list(&build(3, 100)).unwrap();
        assert_eq!(ids, vec![777; 101]);
    }

    #[test]
    fn long_bounds() {
        assert_eq!(long(&[]), Some(0));
        assert_eq!(long(&[0xff]), Some(-1));
        assert_eq!(long(&[0x80, 0x00]), Some(128));
        assert_eq!(long(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]), None); // 2**63
        assert_eq!(long(&[0, 0, 0, 0, 0, 0, 0, 0x80]), Some(i64::MIN));
        assert_eq!(long(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    }

    proptest! {
        #[test]
        fn round_trips_independent_encoding(ids in proptest::collection::vec(any::<i64>(), 0..2500)) {
            prop_assert_eq!(read_id_list(&encode_p2(&ids)).unwrap(), ids);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = read(&bytes);
        }

        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(
            prop_oneof![Just(b']'), Just(b'('), Just(b'e'), Just(b'a'), Just(b'K'), Just(b'q'),
                        Just(b'h'), Just(0x94u8), Just(b'.'), any::<u8>()], 0..60)) {
            let mut p = vec![0x80, 4];
            p.extend(bytes);
            let _ = read(&p);
        }
    }
}
