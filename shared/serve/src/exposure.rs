//! Where exposures go (issue: the exposure log). Locally they are batched off the
//! request path into the events location (`reco_response/<date>/<HH>/...`); on
//! Lambda each is one JSON log line that a CloudWatch Logs subscription and Kinesis
//! Data Firehose carry into the same S3 layout (infra/template.yaml).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use recs_core::Store;
use recs_experiment::{exposure_key, Exposure};
use tokio::sync::{mpsc, oneshot};

/// `EXPOSURE_LOG`: where each recommendation response is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExposureSink {
    /// Not recorded.
    Off,
    /// One JSON line on stdout, `{"event":"reco_response",...}` (Lambda: the log).
    Stdout,
    /// Batched files under this events location (a folder or `s3://bucket/prefix`).
    Events(String),
}

/// Records waiting for the writer; beyond this a record is dropped and counted,
/// so a slow store never slows requests or grows memory.
const QUEUE: usize = 8192;
/// A batch is written once it holds this many records, or after [`FLUSH_EVERY`].
const BATCH: usize = 1000;
const FLUSH_EVERY: Duration = Duration::from_secs(5);

enum Msg {
    Record(Box<Exposure>),
    Flush(oneshot::Sender<()>),
}

/// The exposure log of one process.
#[derive(Debug)]
pub struct ExposureLog {
    sink: Sink,
    dropped: AtomicU64,
    /// Exposures recorded (written, printed or queued).
    recorded: AtomicU64,
}

#[derive(Debug)]
enum Sink {
    Off,
    Stdout,
    Queue(mpsc::Sender<Msg>),
}

impl ExposureLog {
    /// Starts the log; with [`ExposureSink::Events`] a writer task on the current
    /// tokio runtime. An events location that cannot be opened turns the log off,
    /// with an error logged (serving goes on).
    pub fn start(sink: &ExposureSink) -> ExposureLog {
        let sink = match sink {
            ExposureSink::Off => Sink::Off,
            ExposureSink::Stdout => Sink::Stdout,
            ExposureSink::Events(location) => match Store::open(location) {
                Ok(_) if tokio::runtime::Handle::try_current().is_err() => {
                    tracing::error!(events = %location, "exposure log off: no tokio runtime to write it from");
                    Sink::Off
                }
                Ok(store) => {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    tokio::spawn(write_batches(store, rx));
                    Sink::Queue(tx)
                }
                Err(e) => {
                    tracing::error!(events = %location, error = %e, "exposure log off: the events location cannot be opened");
                    Sink::Off
                }
            },
        };
        ExposureLog {
            sink,
            dropped: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
        }
    }

    /// Records one response; never blocks.
    pub fn record(&self, e: Exposure) {
        match &self.sink {
            Sink::Off => return,
            Sink::Stdout => {
                // One line, so the log subscription's filter and Firehose see one
                // record. serde_json cannot fail on this struct.
                if let Ok(mut v) = serde_json::to_value(&e) {
                    v["event"] = "reco_response".into();
                    println!("{v}");
                }
            }
            Sink::Queue(tx) => {
                if tx.try_send(Msg::Record(Box::new(e))).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        self.recorded.fetch_add(1, Ordering::Relaxed);
    }

    /// Records dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// True when nothing is recorded (`EXPOSURE_LOG=off`), so callers can skip
    /// building a record.
    pub fn is_off(&self) -> bool {
        matches!(self.sink, Sink::Off)
    }

    /// Writes what is queued now and waits for it (tests, shutdown, and before an
    /// analysis reads the log).
    pub async fn flush(&self) {
        if let Sink::Queue(tx) = &self.sink {
            let (done, wait) = oneshot::channel();
            if tx.send(Msg::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }
}

/// The writer: one file per batch, keyed by the batch's first record's time, this
/// process and a sequence number, so writers never overwrite one another.
async fn write_batches(store: Store, mut rx: mpsc::Receiver<Msg>) {
    let writer = format!("{}-{:08x}", std::process::id(), rand_suffix());
    let mut seq = 0u64;
    let mut batch: Vec<Exposure> = Vec::new();
    // When the oldest record waiting must be written, whatever the traffic.
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let msg = match deadline {
            Some(at) => tokio::time::timeout_at(at, rx.recv()).await,
            None => Ok(rx.recv().await),
        };
        let mut waiting = None;
        match msg {
            Ok(Some(Msg::Record(e))) => {
                if batch.is_empty() {
                    deadline = Some(tokio::time::Instant::now() + FLUSH_EVERY);
                }
                batch.push(*e);
                if batch.len() < BATCH {
                    continue;
                }
            }
            Ok(Some(Msg::Flush(done))) => waiting = Some(done),
            Ok(None) => {
                write(&store, &writer, &mut seq, &mut batch).await;
                return;
            }
            Err(_elapsed) => {}
        }
        write(&store, &writer, &mut seq, &mut batch).await;
        deadline = (!batch.is_empty()).then(|| tokio::time::Instant::now() + FLUSH_EVERY);
        if let Some(done) = waiting {
            let _ = done.send(());
        }
    }
}

async fn write(store: &Store, writer: &str, seq: &mut u64, batch: &mut Vec<Exposure>) {
    let Some(first) = batch.first() else { return };
    let key = exposure_key(first.ts, writer, *seq);
    let mut body = Vec::with_capacity(batch.len() * 256);
    for e in batch.iter() {
        if serde_json::to_writer(&mut body, e).is_ok() {
            body.push(b'\n');
        }
    }
    match store.put(&key, body).await {
        Ok(_) => {
            *seq += 1;
            batch.clear();
        }
        // Kept for the next attempt, but bounded: a store down for long loses the
        // oldest records rather than all memory.
        Err(e) => {
            tracing::warn!(key = %key, records = batch.len(), error = %e, "exposure batch not written; retrying with the next batch");
            if batch.len() > QUEUE {
                let excess = batch.len() - QUEUE;
                batch.drain(..excess);
            }
        }
    }
}

/// A per-process suffix so two processes with the same pid (containers) differ.
fn rand_suffix() -> u32 {
    let t = recs_core::time::now_ms() as u64;
    recs_core::hash::splitmix64(t ^ u64::from(std::process::id())) as u32
}
