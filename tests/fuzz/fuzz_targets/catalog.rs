//! Takedown and batch inputs: blocked.json bytes are parsed or refused with a typed
//! error; a batch input is answered line by line (one output line per non-blank
//! input line, errors in-line) or refused whole, never a panic.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use recs_core::batch::{self, BatchOptions};
use recs_core::{AlsModel, CsrPattern, Factors, LoadedModel, ServedModel, VersionMeta};

fn model() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| {
        let f = |rows: usize| Factors {
            shape: vec![rows, 2],
            data: (0..rows * 2).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect(),
        };
        let als = AlsModel::new(
            f(3),
            f(5),
            vec![1, 2, 3],
            vec![10, 20, 30, 40, 50],
            CsrPattern::from_rows(5, vec![vec![0], vec![1, 2], vec![]]),
        )
        .expect("model");
        LoadedModel {
            version: "v0.1".into(),
            meta: VersionMeta::default(),
            model_meta: serde_json::Value::Null,
            model: ServedModel::Als(als),
            artifact_sha: String::new(),
            artifact_size: 0,
            load_seconds: 0.0,
            item_attributes: Default::default(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    if kind % 2 == 0 {
        let _ = recs_core::blocked::parse(bytes);
        return;
    }
    let opts = BatchOptions { k: 3, ..Default::default() };
    if let Ok((out, summary)) = batch::run(model(), bytes, &opts, &|_| {}) {
        let lines = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
        assert_eq!(lines, summary.lines);
        assert_eq!(summary.lines, summary.answered + summary.fallback + summary.errors);
    }
});
