//! The date-partitioned folders that can hold a window.

use super::Window;
use recs_core::time::{date_of_day, parse_date};
use recs_core::{Store, StoreError};

/// The day of a date folder name (`2026-11-27`, `dt=2026-11-27`, `date=2026-11-27`).
pub(crate) fn partition_day(name: &str) -> Option<i64> {
    let d = name
        .strip_prefix("dt=")
        .or_else(|| name.strip_prefix("date="))
        .unwrap_or(name);
    parse_date(d)
}

/// The keys (relative to the events root) of the files that can hold `window`'s
/// events: the date folders from the day before the window starts through the day
/// it ends, at the top level or one `<kind>/` level down.
pub async fn list_window_files(store: &Store, window: Window) -> Result<Vec<String>, StoreError> {
    if let Some(root) = store.local_root() {
        if root.is_file() {
            return Ok(vec![String::new()]);
        }
    }
    let first = window.start_ms.div_euclid(86_400_000) - 1;
    let last = (window.end_ms - 1).div_euclid(86_400_000);
    let mut keys = Vec::new();
    let mut kinds = Vec::new();
    for name in store.list_dirs().await? {
        match partition_day(&name) {
            Some(day) if (first..=last).contains(&day) => {
                for k in store.list(&name).await? {
                    keys.push(format!("{name}/{k}"));
                }
            }
            Some(_) => {}
            None => kinds.push(name),
        }
    }
    if last - first > 400 {
        // A window longer than a year: list everything under each kind once.
        for kind in kinds {
            for k in store.list(&kind).await? {
                let day = k.split('/').next().and_then(partition_day);
                if day.is_some_and(|d| (first..=last).contains(&d)) {
                    keys.push(format!("{kind}/{k}"));
                }
            }
        }
    } else {
        let mut tasks = tokio::task::JoinSet::new();
        for kind in &kinds {
            for day in first..=last {
                let date = date_of_day(day);
                for dir in [date.clone(), format!("dt={date}"), format!("date={date}")] {
                    let store = store.clone();
                    let prefix = format!("{kind}/{dir}");
                    tasks.spawn(async move {
                        store.list(&prefix).await.map(|ks| {
                            ks.into_iter()
                                .map(|k| format!("{prefix}/{k}"))
                                .collect::<Vec<_>>()
                        })
                    });
                }
            }
        }
        while let Some(r) = tasks.join_next().await {
            keys.extend(r.expect("list task panicked")?);
        }
    }
    keys.sort();
    Ok(keys)
}
