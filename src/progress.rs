//! Progress of long one-shot work on a terminal: the live reads of `plan --refresh`, `apply
//! --refresh` and `import` (groups read out of the total), and each retry with its wait
//! (`retrying after HTTP 503 Service Unavailable in 2s (attempt 3/5)`).
//!
//! A [`tracing`] layer: the work records what happens as events (the reads as
//! `marksync::progress` events, the client's retries as its own `retrying` debug event), whether
//! anyone watches or not, and this layer draws them on stderr. Whether it draws is decided once,
//! by whether stderr is a terminal: the work's code path is the same on a pipe (CI logs), which
//! gets no progress at all. Nothing is drawn in the first [`QUIET_FOR`] of a run, so quick
//! commands stay quiet; a retry whose wait alone is that long is shown at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The target of the reads' progress events.
pub const TARGET: &str = "marksync::progress";

/// How long a run stays silent before progress is drawn.
pub const QUIET_FOR: Duration = Duration::from_secs(2);

/// Says, when dropped, that the reads are over (however they ended): the bar goes away.
pub struct ReadsOver;

impl Drop for ReadsOver {
    fn drop(&mut self) {
        tracing::trace!(target: TARGET, over = true, "reads over");
    }
}

/// The layer; see the module docs.
#[derive(Clone)]
pub struct ProgressLayer {
    shared: Arc<Shared>,
}

struct Shared {
    /// Whether to draw at all: stderr is a terminal.
    draw: bool,
    /// When the run started (the layer is made at startup).
    started: Instant,
    /// The reads' bar while reads are under way (hidden until [`QUIET_FOR`] has passed).
    bar: Mutex<Option<ProgressBar>>,
}

impl ProgressLayer {
    /// A layer that draws on stderr when `draw` (stderr is a terminal), else only listens.
    pub fn new(draw: bool) -> Self {
        ProgressLayer {
            shared: Arc::new(Shared {
                draw,
                started: Instant::now(),
                bar: Mutex::new(None),
            }),
        }
    }

    /// Which events the layer needs, whatever the log filter: the reads' progress and the
    /// client's retries.
    pub fn wants(meta: &Metadata<'_>) -> bool {
        meta.target() == TARGET
            || (meta.target() == "marksync::tim::client" && *meta.level() <= tracing::Level::DEBUG)
    }

    fn reads(&self, read: u64, total: u64) {
        let shared = &self.shared;
        let mut bar = shared.bar.lock().unwrap_or_else(|e| e.into_inner());
        if bar.is_none() {
            let new = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} reading the live marks: {pos}/{len} groups, {elapsed}",
            ) {
                new.set_style(style);
            }
            if shared.draw {
                let left = QUIET_FOR.saturating_sub(shared.started.elapsed());
                let shown = new.clone();
                // Shown once the run has been going for QUIET_FOR, reads or no reads (one
                // group's pages can take long).
                std::thread::spawn(move || {
                    std::thread::sleep(left);
                    if !shown.is_finished() {
                        shown.set_draw_target(ProgressDrawTarget::stderr());
                        shown.enable_steady_tick(Duration::from_millis(120));
                    }
                });
            }
            *bar = Some(new);
        }
        if let Some(b) = bar.as_ref() {
            b.set_position(read);
            if read >= total {
                b.finish_and_clear();
                *bar = None;
            }
        }
    }

    fn reads_over(&self) {
        let mut bar = self.shared.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = bar.take() {
            b.finish_and_clear();
        }
    }

    fn retry(&self, r: &Retry) {
        let shared = &self.shared;
        let wait = Duration::from_millis(r.wait_ms);
        if !shared.draw || (shared.started.elapsed() < QUIET_FOR && wait < QUIET_FOR) {
            return;
        }
        let line = retry_line(r);
        let bar = shared.bar.lock().unwrap_or_else(|e| e.into_inner());
        match bar.as_ref() {
            Some(b) if !b.is_hidden() => b.println(line),
            _ => eprintln!("{line}"),
        }
    }
}

/// Where the log lines go: stderr, written while the bar (if one is drawn) is lifted, so that a
/// warning during the reads does not land in the middle of the bar's line.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

impl ProgressLayer {
    /// The writer for the log layer.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter {
            shared: self.shared.clone(),
        }
    }
}

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // A clone, so that the lock is not held while writing.
        let bar = self
            .shared
            .bar
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match bar {
            Some(b) if !b.is_hidden() => b.suspend(|| std::io::stderr().write(buf)),
            _ => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// What a `retrying` event says.
#[derive(Debug, Default, PartialEq, Eq)]
struct Retry {
    reason: String,
    wait_ms: u64,
    attempt: u64,
    max_attempts: u64,
}

/// `retrying after HTTP 503 Service Unavailable in 2s (attempt 3/5)`.
fn retry_line(r: &Retry) -> String {
    format!(
        "retrying after {} in {} (attempt {}/{})",
        r.reason,
        wait_text(Duration::from_millis(r.wait_ms)),
        r.attempt,
        r.max_attempts
    )
}

/// A wait as people read it: `2s` (rounded), or `500ms` below a second.
fn wait_text(wait: Duration) -> String {
    let ms = wait.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s", (ms + 500) / 1000)
    }
}

/// The fields of an event this layer reads.
#[derive(Default)]
struct Fields {
    message: String,
    read: Option<u64>,
    total: Option<u64>,
    over: bool,
    retry: Retry,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "read" => self.read = Some(value),
            "total" => self.total = Some(value),
            "wait_ms" => self.retry.wait_ms = value,
            "attempts" => self.retry.attempt = value,
            "max_attempts" => self.retry.max_attempts = value,
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_u64(field, u64::try_from(value).unwrap_or(0));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "over" {
            self.over = value;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "reason" => self.retry.reason = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "reason" => self.retry.reason = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for ProgressLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        if event.metadata().target() == TARGET {
            if f.over {
                self.reads_over();
            } else if let (Some(read), Some(total)) = (f.read, f.total) {
                self.reads(read, total);
            }
        } else if f.message == "retrying" {
            self.retry(&f.retry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_reads_as_a_sentence_with_a_rounded_wait() {
        let r = Retry {
            reason: "HTTP 503 Service Unavailable".into(),
            wait_ms: 2_340,
            attempt: 3,
            max_attempts: 5,
        };
        assert_eq!(
            retry_line(&r),
            "retrying after HTTP 503 Service Unavailable in 2s (attempt 3/5)"
        );
        assert_eq!(wait_text(Duration::from_millis(480)), "480ms");
        assert_eq!(wait_text(Duration::from_millis(2_600)), "3s");
    }

    #[test]
    fn the_layer_reads_progress_and_retry_events() {
        use tracing_subscriber::prelude::*;
        let layer = ProgressLayer::new(false);
        let shared = layer.shared.clone();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: TARGET, read = 0u64, total = 2u64, "groups read");
            assert!(shared.bar.lock().unwrap().is_some(), "reads under way");
            tracing::trace!(target: TARGET, read = 2u64, total = 2u64, "groups read");
            assert!(shared.bar.lock().unwrap().is_none(), "reads done");
            // Reads that end early (a fatal error, Ctrl-C) leave no bar behind.
            tracing::trace!(target: TARGET, read = 0u64, total = 5u64, "groups read");
            drop(ReadsOver);
            assert!(shared.bar.lock().unwrap().is_none(), "reads over");
        });
    }
}
