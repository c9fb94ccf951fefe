//! The allocator settings of a serving process (`recs serve`, the HTTP Lambda
//! functions), applied once at start-up by [`tune`].
//!
//! Why: under steady traffic glibc's heap keeps the bytes in use flat (every store
//! is bounded) but holds more and more free memory, fragments left between the many
//! small, differently sized allocations of answers and traces as they are replaced
//! (a dev-build soak at 80,000 requests: 32 MB in use, 8-10 MB free and resident,
//! growing ~1 MB per 10,000 requests). glibc returns free pages to the kernel only
//! from the top of a heap unless `malloc_trim` is called, so a thread calls it
//! every 2 s; with two arenas instead of glibc's up to 8 per core the free memory
//! lies in larger runs of whole pages: one trim there gave back 7.0 MB, against
//! 1.9 MB with the default arenas (docs/BENCHMARKS.md, "Soak"). Other C libraries: nothing.

use std::sync::Once;
#[cfg(target_env = "gnu")]
use std::time::Duration;

/// How often free heap pages are handed back to the kernel (each call walks the
/// free lists of every arena, holding that arena's lock meanwhile).
#[cfg(target_env = "gnu")]
const TRIM_EVERY: Duration = Duration::from_secs(2);
/// glibc arenas: serving threads allocate from these two instead of one per thread.
#[cfg(target_env = "gnu")]
const ARENAS: i32 = 2;

static ONCE: Once = Once::new();

/// Applies the allocator settings once per process; later calls do nothing. An
/// operator's own `MALLOC_ARENA_MAX` is left as given.
pub fn tune() {
    ONCE.call_once(|| {
        #[cfg(target_env = "gnu")]
        glibc();
    });
}

#[cfg(target_env = "gnu")]
fn glibc() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called at start-up.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
    }
    let spawned = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| loop {
            std::thread::sleep(TRIM_EVERY);
            // SAFETY: malloc_trim takes the arena locks itself; 0 keeps no pad.
            unsafe { libc::malloc_trim(0) };
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no malloc-trim thread: freed heap pages stay with the process");
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    fn trim_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter(|t| {
                let comm = t.as_ref().unwrap().path().join("comm");
                std::fs::read_to_string(comm).unwrap_or_default().trim() == "malloc-trim"
            })
            .count()
    }

    #[test]
    fn tune_starts_one_trim_thread_however_often_called() {
        super::tune();
        super::tune();
        // The thread names itself once it runs: wait for that, not for a time.
        for _ in 0..500 {
            if trim_threads() > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(trim_threads(), 1);
    }
}
