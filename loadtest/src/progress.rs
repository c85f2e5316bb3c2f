//! The live progress line (indicatif, on stderr; hidden when stderr is not a terminal).

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::session::LiveCounters;

/// A progress bar refreshed from [`LiveCounters`] by a background task.
pub struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// `total` = the length of the bar (sockets to open, or notifications to send).
    pub fn new(enabled: bool, total: u64) -> Self {
        let visible = enabled && std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if visible {
                ProgressDrawTarget::stderr_with_hz(4)
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        let style = ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        Progress { bar, ticker: None }
    }

    /// Starts a phase: `label` and which counter drives the position.
    pub fn phase(&mut self, label: &str, total: u64, live: Arc<LiveCounters>, position: Position) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        self.bar.set_length(total);
        self.bar.set_prefix(label.to_string());
        let bar = self.bar.clone();
        let label = label.to_string();
        self.ticker = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            // Bounded: a day of refreshes at most; aborted at the end of the phase.
            for _ in 0..345_600 {
                tick.tick().await;
                let pos = match position {
                    Position::Connected => {
                        live.connected.load(Ordering::Relaxed) + live.failed.load(Ordering::Relaxed)
                    }
                    Position::Notifications => live.notifications.load(Ordering::Relaxed),
                    Position::Published => live.published.load(Ordering::Relaxed),
                    Position::Elapsed(start) => start.elapsed().as_secs(),
                };
                bar.set_position(pos);
                bar.set_message(format!(
                    "{label}: open {} failed {} deliveries {} acks {} errors {}",
                    live.open(),
                    live.failed.load(Ordering::Relaxed),
                    live.deliveries.load(Ordering::Relaxed),
                    live.acked.load(Ordering::Relaxed),
                    live.error_frames.load(Ordering::Relaxed),
                ));
            }
        }));
    }

    pub fn finish(mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}

/// What the bar position counts.
#[derive(Debug, Clone, Copy)]
pub enum Position {
    Connected,
    Notifications,
    Published,
    Elapsed(std::time::Instant),
}
