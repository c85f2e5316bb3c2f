//! The one way the aws engine's background tasks wait: a pause that ends
//! early, answering false, once the node's cancellation token is cancelled.
//! Every periodic loop is `while pause(&stop, every).await { … }`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sleeps `d`; false (at once) if `stop` is or gets cancelled.
pub(crate) async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    stop.run_until_cancelled(tokio::time::sleep(d))
        .await
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pause_ends_at_its_time_or_at_cancel() {
        let stop = CancellationToken::new();
        assert!(pause(&stop, Duration::from_millis(5)).await);
        stop.cancel();
        let cut_short = tokio::time::timeout(
            Duration::from_secs(5),
            pause(&stop, Duration::from_secs(3600)),
        );
        assert_eq!(cut_short.await, Ok(false));
    }
}
