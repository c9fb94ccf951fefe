//! scipy CSR `.npz`: refused with a typed error, or a well-formed pattern.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = recs_core::npz::read_csr(data) {
        assert_eq!(p.indptr.len(), p.rows + 1);
        assert!(p.indices.iter().all(|&c| (c as usize) < p.cols));
        // What was read writes back to the same pattern.
        assert_eq!(recs_core::npz::read_csr(&recs_core::npz::write_csr(&p)).unwrap(), p);
    }
});
