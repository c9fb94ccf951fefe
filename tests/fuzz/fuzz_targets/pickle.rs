//! The pickle reader (v_popularity/model.pkl): refused with a typed error, or a
//! value; an id list is exactly what `read` built.
#![no_main]
use libfuzzer_sys::fuzz_target;
use recs_core::pickle::{self, PickleValue};

fuzz_target!(|data: &[u8]| {
    let value = pickle::read(data);
    match pickle::read_id_list(data) {
        Ok(ids) => {
            // read_id_list is read plus a shape check: the same list, entry by entry.
            let Ok(PickleValue::List(items)) = value else {
                panic!("read_id_list accepted what read gave as {value:?}")
            };
            assert_eq!(items.len(), ids.len());
        }
        Err(pickle::PickleError::WrongShape(_)) => assert!(value.is_ok()),
        Err(e) => assert_eq!(value, Err(e)),
    }
});
