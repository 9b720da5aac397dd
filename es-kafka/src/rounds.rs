//! The loop both publishing methods run: a round, then a pause chosen by
//! what the round achieved, until shutdown (with a bounded grace).

use std::future::Future;
use std::time::Duration;

use es_core::RetryPolicy;

/// What a round means for the pace of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Something failed: back off.
    Failed,
    /// A batch went out: go again at once.
    Busy,
    /// Nothing was pending: wait the poll interval.
    Idle,
    /// Another publisher has the turn: look again after
    /// [`STANDBY_RECHECK`].
    Standby,
}

/// How often a standing-by publisher checks whether the turn is free.
pub(crate) const STANDBY_RECHECK: Duration = Duration::from_secs(1);

/// The pacing settings of a loop.
pub(crate) struct Pace<'a> {
    pub(crate) poll_interval: Duration,
    pub(crate) backoff: &'a RetryPolicy,
    pub(crate) shutdown_grace: Duration,
    pub(crate) what: &'static str,
}

/// Runs `round` until `shutdown` completes. A round in progress when
/// shutdown is requested gets `shutdown_grace` to finish; then it is
/// dropped (both methods are safe to drop at any point: nothing is marked
/// or advanced before Kafka acknowledged it).
pub(crate) async fn run<F, Fut>(pace: Pace<'_>, shutdown: impl Future<Output = ()>, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Progress>,
{
    tokio::pin!(shutdown);
    let mut failures: u32 = 0;
    loop {
        let current = round();
        tokio::pin!(current);
        let progress = tokio::select! {
            biased;
            () = &mut shutdown => {
                if tokio::time::timeout(pace.shutdown_grace, current).await.is_err() {
                    tracing::warn!(
                        grace = ?pace.shutdown_grace,
                        "{} round still running at shutdown; dropped (it is redone at the next start)",
                        pace.what
                    );
                }
                return;
            }
            p = &mut current => p,
        };
        let wait = match progress {
            Progress::Failed => {
                failures = failures.saturating_add(1);
                pace.backoff.delay_after(failures)
            }
            Progress::Busy => {
                failures = 0;
                Duration::ZERO
            }
            Progress::Idle => {
                failures = 0;
                pace.poll_interval
            }
            Progress::Standby => {
                failures = 0;
                STANDBY_RECHECK.max(pace.poll_interval)
            }
        };
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
