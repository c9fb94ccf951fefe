//! `.npy` headers and arrays: refused with a typed error or read consistently.
#![no_main]
use libfuzzer_sys::fuzz_target;
use recs_core::npy;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = npy::parse_header(data) {
        // An accepted header's element count is computable and its data present.
        let n = h.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        assert!(n.is_some(), "accepted shape {:?} overflows", h.shape);
        assert!(h.data_offset <= data.len());
    }
    if let Ok(a) = npy::read_f32(data) {
        assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
    }
    if let Ok(a) = npy::read_int(data) {
        assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
    }
    if let Ok(a) = npy::read_float(data) {
        assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
    }
    let _ = npy::read_bytes(data);
});
