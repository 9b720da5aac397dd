//! [`ProjectionRunner`]: the one loop that drives every projection.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::{Advance, DeadLetter, ProjectionError, ProjectionUnit, Undecodable, UnitError};
use crate::error::BoxError;
use crate::{EventFilter, EventStore, RecordedEvent, RetryPolicy, StoreError};

/// What a runner does with an event its projector keeps failing on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Stop with [`ProjectionError::Stopped`]; the checkpoint stays before
    /// the event. The default: a broken projector is loud.
    #[default]
    Stop,
    /// Record it as a dead letter, move past it and go on. Counted in
    /// [`ProjectionReport::dead_lettered`].
    DeadLetter,
}

/// Settings of a [`ProjectionRunner`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionConfig {
    /// Events read — and applied in one unit of work — per page.
    pub batch_size: usize,
    /// How long a following runner waits for a wake-up before polling.
    pub poll_interval: Duration,
    /// How long a following runner lets new events gather after a wake-up
    /// before it reads them (default zero: at once). Under a steady stream
    /// of appends a few milliseconds turn many pages of a few events into
    /// fewer, larger ones — fewer transactions for the read model and the
    /// store — for that much more lag. A caller of
    /// [`wait_for`](ProjectionRunner::wait_for) (on this runner or a clone)
    /// that is still behind cuts the linger short, so read-your-writes
    /// does not wait for it. [`catch_up`](ProjectionRunner::catch_up)
    /// never lingers.
    pub linger: Duration,
    /// How long a runner may keep in memory only a checkpoint that moved
    /// past events its filter leaves out (default zero: every move is
    /// written at once). A filtered projection — a process manager that
    /// handles a few event types, say — is woken by every append and
    /// mostly finds nothing to apply; writing the checkpoint each time is
    /// a transaction per wake-up that applies nothing. With an interval,
    /// such a move is written with the next page that applies something,
    /// or once it is this old. Nothing is applied twice or skipped: the
    /// events between the stored checkpoint and the one in memory are
    /// events the projection does not take, and a runner that finds the
    /// stored checkpoint moved by another runner starts from there. After
    /// a crash the runner reads those events again and applies nothing.
    /// [`position`](ProjectionRunner::position) reports the stored
    /// checkpoint; [`known_position`](ProjectionRunner::known_position) and
    /// [`wait_for`](ProjectionRunner::wait_for) the one in memory.
    pub skip_checkpoint_interval: Duration,
    /// Attempts at an event the projector fails on.
    pub retry: RetryPolicy,
    /// What to do when the attempts are used up.
    pub on_failure: OnFailure,
    /// Back-off of [`run`](ProjectionRunner::run) after a store error
    /// (the log or the checkpoint unreachable); it keeps trying.
    pub store_retry: RetryPolicy,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            poll_interval: Duration::from_millis(500),
            linger: Duration::ZERO,
            skip_checkpoint_interval: Duration::ZERO,
            retry: RetryPolicy {
                max_attempts: 5,
                initial_delay: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
            on_failure: OnFailure::Stop,
            store_retry: RetryPolicy {
                max_attempts: u32::MAX,
                initial_delay: Duration::from_millis(100),
                multiplier: 2.0,
                max_delay: Duration::from_secs(5),
                jitter: 0.2,
            },
        }
    }
}

/// How a replay starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayMode {
    /// Reset the read model and apply the whole log again.
    Full,
    /// Move the checkpoint back to `position` and apply everything after it
    /// (refused with [`ProjectionError::PastCheckpoint`] when `position` is
    /// past the checkpoint).
    From(u64),
    /// Apply again only events of these types after `from`, up to the
    /// current checkpoint; the checkpoint does not move.
    Selective {
        /// The event types to apply again.
        event_types: Vec<String>,
        /// Start after this position.
        from: u64,
    },
}

/// What a catch-up or replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectionReport {
    /// Events applied to the read model.
    pub applied: u64,
    /// Events the projector failed on and that were dead-lettered
    /// ([`OnFailure::DeadLetter`]); not included in `applied`.
    pub dead_lettered: u64,
    /// The checkpoint afterwards (in memory: with
    /// [`ProjectionConfig::skip_checkpoint_interval`], the stored one may
    /// still be behind it, over events the projection does not take).
    pub position: u64,
}

/// Progress of a catch-up or replay, reported after every page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Position reached.
    pub position: u64,
    /// Head of the log when the page was read.
    pub head: u64,
    /// Totals so far.
    pub report: ProjectionReport,
}

type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Runs a [`ProjectionUnit`] over an [`EventStore`]'s global log: the one
/// engine for every projection and backend.
///
/// - [`catch_up`](Self::catch_up) applies every event after the checkpoint,
///   a page (`batch_size` events) per unit of work;
/// - [`run`](Self::run) catches up and then follows new events until shut
///   down, riding out store errors with back-off;
/// - [`replay`](Self::replay) rebuilds in full, from a position, or
///   selectively by event type;
/// - an event the projector fails on is retried alone (`retry`), then stops
///   the runner ([`OnFailure::Stop`], the default) or is dead-lettered;
///   an event that does not decode ([`Undecodable`]) is not retried;
/// - [`wait_for`](Self::wait_for) waits until the projection has passed a
///   position: read-your-writes for a command's events.
///
/// Metrics: `es_projection_position{projection}` (gauge),
/// `es_projection_lag_seconds{projection}` (histogram: age of a page's
/// last event when the page is committed),
/// `es_projection_dead_letters_total{projection}`.
///
/// Clones share the position watch and progress callback.
pub struct ProjectionRunner {
    store: Arc<dyn EventStore>,
    unit: Arc<dyn ProjectionUnit>,
    config: ProjectionConfig,
    position: watch::Sender<u64>,
    progress: Option<ProgressFn>,
    skipped: Arc<Mutex<Option<Skipped>>>,
    /// Poked by a [`wait_for`](Self::wait_for) that is behind: ends the
    /// follower's linger (a poke while it is not lingering ends the next
    /// one).
    hurry: Arc<Notify>,
}

/// A checkpoint move past filtered-out events, not written yet
/// ([`ProjectionConfig::skip_checkpoint_interval`]).
#[derive(Debug, Clone, Copy)]
struct Skipped {
    /// The stored checkpoint when the move was made.
    stored: u64,
    /// Where the runner stands.
    ahead: u64,
    /// When the first move not written was made.
    since: Instant,
}

impl Clone for ProjectionRunner {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            unit: Arc::clone(&self.unit),
            config: self.config.clone(),
            position: self.position.clone(),
            progress: self.progress.clone(),
            skipped: Arc::clone(&self.skipped),
            hurry: Arc::clone(&self.hurry),
        }
    }
}

impl std::fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.unit.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How one event that failed within a page was settled.
enum Settled {
    Applied,
    DeadLettered,
    Moved(u64),
}

impl ProjectionRunner {
    /// A runner of `unit` over `store` with the default configuration.
    pub fn new(store: Arc<dyn EventStore>, unit: Arc<dyn ProjectionUnit>) -> Self {
        Self {
            store,
            unit,
            config: ProjectionConfig::default(),
            position: watch::Sender::new(0),
            progress: None,
            skipped: Arc::new(Mutex::new(None)),
            hurry: Arc::new(Notify::new()),
        }
    }

    /// Replaces the configuration.
    #[must_use]
    pub fn with_config(mut self, config: ProjectionConfig) -> Self {
        self.config = config;
        self
    }

    /// Calls `f` after every page of a catch-up or replay (progress bars).
    #[must_use]
    pub fn with_progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        self.unit.name()
    }

    /// The unit this runner drives.
    pub fn unit(&self) -> &Arc<dyn ProjectionUnit> {
        &self.unit
    }

    /// The event store it reads.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &ProjectionConfig {
        &self.config
    }

    fn store_err(&self, source: StoreError) -> ProjectionError {
        ProjectionError::Store {
            projection: self.unit.name().to_owned(),
            source,
        }
    }

    fn publish(&self, position: u64) {
        self.position.send_replace(position);
        metrics::gauge!("es_projection_position", "projection" => self.unit.name().to_owned()).set(position as f64);
    }

    /// The stored checkpoint: last position applied.
    pub async fn position(&self) -> Result<u64, ProjectionError> {
        let p = self.unit.position().await.map_err(|e| self.store_err(e))?;
        let held = *self.skipped.lock().unwrap_or_else(PoisonError::into_inner);
        self.publish(held.filter(|s| s.stored == p).map_or(p, |s| s.ahead));
        Ok(p)
    }

    /// The last checkpoint this runner (or a clone) saw, without I/O.
    pub fn known_position(&self) -> u64 {
        *self.position.borrow()
    }

    /// Waits until the projection has applied everything up to `position`
    /// (as seen by this runner and its clones), for at most `timeout`;
    /// whether it got there. A following runner that lingers
    /// ([`ProjectionConfig::linger`]) reads at once when a caller is
    /// behind.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut rx = self.position.subscribe();
        let reached = async {
            // Pokes again after every page that fell short (one that
            // stopped at a gap, say), so no linger is sat out.
            let mut poked = None;
            loop {
                let now = *rx.borrow_and_update();
                if now >= position {
                    return true;
                }
                if poked != Some(now) {
                    poked = Some(now);
                    self.hurry.notify_one();
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, reached).await.unwrap_or(false)
    }

    /// Applies every event after the checkpoint up to the head of the log.
    #[tracing::instrument(level = "debug", name = "es.projection.catch_up", skip(self), fields(projection = self.unit.name()))]
    pub async fn catch_up(&self) -> Result<ProjectionReport, ProjectionError> {
        let filter = self.unit.filter();
        let stored = self.unit.position().await.map_err(|e| self.store_err(e))?;
        // A move past filtered-out events kept in memory goes on from where
        // it stood, unless another runner moved the stored checkpoint since.
        let mut skipped = self.take_skipped().filter(|s| s.stored == stored && s.ahead > stored);
        let mut report = ProjectionReport {
            position: skipped.map_or(stored, |s| s.ahead),
            ..ProjectionReport::default()
        };
        self.publish(report.position);
        let result = async {
            loop {
                let head = self.store.head_position().await.map_err(|e| self.store_err(e))?;
                let page = self
                    .store
                    .read_all(report.position, self.config.batch_size, &filter)
                    .await
                    .map_err(|e| self.store_err(e))?;
                let (next, full) = super::checkpoint_after_page(report.position, head, &page, self.config.batch_size);
                if next != report.position {
                    if page.is_empty() && self.may_skip(skipped.as_ref()) {
                        skipped = Some(Skipped {
                            stored,
                            ahead: next,
                            since: skipped.map_or_else(Instant::now, |s| s.since),
                        });
                        report.position = next;
                    } else {
                        let from = skipped.take().map_or(report.position, |s| s.stored);
                        report.position = self.commit_page(from, &page, next, &mut report).await?;
                        if let Some(last) = page.last() {
                            let lag = (chrono::Utc::now() - last.recorded_at).as_seconds_f64().max(0.0);
                            metrics::histogram!("es_projection_lag_seconds", "projection" => self.unit.name().to_owned())
                                .record(lag);
                        }
                    }
                    self.publish(report.position);
                }
                if let Some(f) = &self.progress {
                    f(&Progress {
                        position: report.position,
                        head,
                        report,
                    });
                }
                if !full {
                    break;
                }
            }
            // A move kept in memory long enough is written now, even when
            // nothing else came.
            if let Some(s) = skipped.filter(|s| !self.may_skip(Some(s))) {
                skipped = None;
                report.position = self.write_move(s).await?;
            }
            Ok(report)
        }
        .await;
        *self.skipped.lock().unwrap_or_else(PoisonError::into_inner) = skipped;
        result
    }

    /// Whether a move past filtered-out events may stay in memory (`held`:
    /// the one already kept, if any).
    fn may_skip(&self, held: Option<&Skipped>) -> bool {
        let interval = self.config.skip_checkpoint_interval;
        !interval.is_zero() && held.is_none_or(|s| s.since.elapsed() < interval)
    }

    fn take_skipped(&self) -> Option<Skipped> {
        self.skipped.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Applies `page` moving the checkpoint from `from` to `to`; returns
    /// the checkpoint afterwards (another runner's, when it moved first).
    async fn commit_page(
        &self,
        from: u64,
        page: &[RecordedEvent],
        to: u64,
        report: &mut ProjectionReport,
    ) -> Result<u64, ProjectionError> {
        let mut from = from;
        let mut rest = page;
        // After a page failed as a whole, events go one by one until the
        // one that fails alone is settled.
        let mut one_by_one = false;
        loop {
            let take = if one_by_one { rest.len().min(1) } else { rest.len() };
            let (chunk, after) = rest.split_at(take);
            let chunk_to = if after.is_empty() {
                to
            } else {
                chunk[chunk.len() - 1].global_position
            };
            match self.unit.apply(chunk, Some(Advance { from, to: chunk_to })).await {
                Ok(()) => {
                    report.applied += chunk.len() as u64;
                    from = chunk_to;
                    rest = after;
                    if rest.is_empty() {
                        return Ok(to);
                    }
                }
                Err(UnitError::Moved { position }) => return Ok(position),
                Err(UnitError::Store(e)) => return Err(self.store_err(e)),
                Err(UnitError::Apply { applied, index, error }) => {
                    let applied = applied.min(chunk.len());
                    report.applied += applied as u64;
                    if applied > 0 {
                        from = chunk[applied - 1].global_position;
                    }
                    rest = &rest[applied..];
                    match index {
                        None if chunk.len() > 1 => {
                            tracing::debug!(projection = self.unit.name(), %error, "page failed; applying its events one by one");
                            one_by_one = true;
                            continue;
                        }
                        _ => {}
                    }
                    // A unit that reports every event applied and still
                    // fails has committed them: nothing is left to settle.
                    let Some(event) = rest.first() else {
                        return Ok(from);
                    };
                    let last = rest.len() == 1;
                    let event_to = if last { to } else { event.global_position };
                    match self.settle(from, event, event_to, error).await? {
                        Settled::Applied => report.applied += 1,
                        Settled::DeadLettered => report.dead_lettered += 1,
                        Settled::Moved(p) => return Ok(p),
                    }
                    from = event_to;
                    rest = &rest[1..];
                    one_by_one = false;
                    if rest.is_empty() {
                        return Ok(to);
                    }
                }
            }
        }
    }

    /// An event the projector failed on (first attempt's error given):
    /// retries it alone, then stops or dead-letters it.
    async fn settle(
        &self,
        from: u64,
        event: &RecordedEvent,
        to: u64,
        first: BoxError,
    ) -> Result<Settled, ProjectionError> {
        let advance = Some(Advance { from, to });
        let mut attempt = 1;
        let mut error = first;
        loop {
            let permanent = error.is::<Undecodable>();
            if permanent || !self.config.retry.should_retry(attempt) {
                return self.give_up(event, error, attempt, advance).await;
            }
            tracing::warn!(projection = self.unit.name(), position = event.global_position, attempt, %error, "projector failed; retrying");
            tokio::time::sleep(self.config.retry.delay_after(attempt)).await;
            attempt += 1;
            match self.unit.apply(std::slice::from_ref(event), advance).await {
                Ok(()) => return Ok(Settled::Applied),
                Err(UnitError::Moved { position }) => return Ok(Settled::Moved(position)),
                Err(UnitError::Store(e)) => return Err(self.store_err(e)),
                Err(UnitError::Apply { error: e, .. }) => error = e,
            }
        }
    }

    async fn give_up(
        &self,
        event: &RecordedEvent,
        error: BoxError,
        attempts: u32,
        advance: Option<Advance>,
    ) -> Result<Settled, ProjectionError> {
        let name = self.unit.name();
        let error = error.to_string();
        if self.config.on_failure == OnFailure::Stop {
            tracing::error!(projection = name, position = event.global_position, attempts, %error, "projection stopped");
            let stopped = ProjectionError::Stopped {
                projection: name.to_owned(),
                position: event.global_position,
                event_type: event.event_type.clone(),
                attempts,
                error,
            };
            if let Err(e) = self.unit.record_failure(&stopped.to_string()).await {
                tracing::warn!(projection = name, error = %e, "could not record the failure");
            }
            return Err(stopped);
        }
        tracing::error!(projection = name, position = event.global_position, attempts, %error, "event dead-lettered");
        metrics::counter!("es_projection_dead_letters_total", "projection" => name.to_owned()).increment(1);
        let letter = DeadLetter::of(name, event, error, attempts);
        match self.unit.dead_letter(letter, advance).await {
            Ok(()) => Ok(Settled::DeadLettered),
            Err(UnitError::Moved { position }) => Ok(Settled::Moved(position)),
            Err(UnitError::Store(e)) => Err(self.store_err(e)),
            Err(UnitError::Apply { error, .. }) => {
                Err(self.store_err(StoreError::backend("record dead letter", error)))
            }
        }
    }

    /// Catches up, then follows new events until `shutdown` completes.
    ///
    /// Store errors (database down) are logged and retried with
    /// `store_retry` back-off; it returns an error only when the projector
    /// fails and the runner is set to [`OnFailure::Stop`]. At shutdown it
    /// writes a checkpoint it kept in memory
    /// ([`ProjectionConfig::skip_checkpoint_interval`]).
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ProjectionError> {
        let result = self.follow(shutdown).await;
        self.write_skipped().await;
        result
    }

    /// Writes a move past filtered-out events kept in memory, if any (a
    /// failure is logged: the events are read again, and skipped again).
    async fn write_skipped(&self) {
        let Some(s) = self.take_skipped() else { return };
        if let Err(e) = self.write_move(s).await {
            tracing::warn!(projection = self.unit.name(), error = %e, "could not write the checkpoint kept in memory");
        }
    }

    /// Writes one move past filtered-out events (an empty page from the
    /// stored checkpoint to where the runner stands) and publishes where
    /// the checkpoint is now (another runner's, if it moved first).
    async fn write_move(&self, s: Skipped) -> Result<u64, ProjectionError> {
        let position = self
            .commit_page(s.stored, &[], s.ahead, &mut ProjectionReport::default())
            .await?;
        self.publish(position);
        Ok(position)
    }

    async fn follow(&self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ProjectionError> {
        tokio::pin!(shutdown);
        let mut failures = 0u32;
        loop {
            let waited = match self.catch_up().await {
                Ok(report) => {
                    failures = 0;
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        waited = self.store.wait_for_events(report.position, self.config.poll_interval) => waited.map_err(|e| self.store_err(e)),
                    }
                }
                Err(e) => Err(e),
            };
            match waited {
                Ok(()) if !self.config.linger.is_zero() => {
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(self.config.linger) => {}
                        () = self.hurry.notified() => {}
                    }
                }
                Ok(()) => {}
                Err(e @ ProjectionError::Store { .. }) => {
                    failures = failures.saturating_add(1);
                    let delay = self.config.store_retry.delay_after(failures);
                    tracing::warn!(projection = self.unit.name(), error = %e, ?delay, "projection store error; retrying");
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Replays by `mode`.
    #[tracing::instrument(name = "es.projection.replay", skip(self), fields(projection = self.unit.name()))]
    pub async fn replay(&self, mode: ReplayMode) -> Result<ProjectionReport, ProjectionError> {
        let name = self.unit.name().to_owned();
        match mode {
            ReplayMode::Full => {
                self.take_skipped();
                self.unit.reset().await.map_err(|e| match e {
                    UnitError::Store(source) => self.store_err(source),
                    other => ProjectionError::Reset {
                        projection: name.clone(),
                        error: other.to_string(),
                    },
                })?;
                self.publish(0);
                self.catch_up().await
            }
            ReplayMode::From(position) => {
                let checkpoint = self.unit.position().await.map_err(|e| self.store_err(e))?;
                if position > checkpoint {
                    return Err(ProjectionError::PastCheckpoint {
                        projection: name,
                        position,
                        checkpoint,
                    });
                }
                self.take_skipped();
                self.unit.seek(position).await.map_err(|e| self.store_err(e))?;
                self.publish(position);
                self.catch_up().await
            }
            ReplayMode::Selective { event_types, from } => self.replay_selected(event_types, from).await,
        }
    }

    async fn replay_selected(&self, event_types: Vec<String>, from: u64) -> Result<ProjectionReport, ProjectionError> {
        let until = self.position().await?;
        let base = self.unit.filter();
        let wanted: Vec<String> = if base.event_types.is_empty() {
            event_types
        } else {
            event_types
                .into_iter()
                .filter(|t| base.event_types.contains(t))
                .collect()
        };
        let mut report = ProjectionReport {
            position: until,
            ..ProjectionReport::default()
        };
        if wanted.is_empty() {
            return Ok(report);
        }
        let filter = EventFilter {
            event_types: wanted,
            stream_types: base.stream_types,
        };
        let mut position = from;
        loop {
            let page = self
                .store
                .read_all(position, self.config.batch_size, &filter)
                .await
                .map_err(|e| self.store_err(e))?;
            let full = page.len() >= self.config.batch_size;
            let page: Vec<RecordedEvent> = page.into_iter().take_while(|e| e.global_position <= until).collect();
            let Some(last) = page.last().map(|e| e.global_position) else {
                return Ok(report);
            };
            self.reapply_page(&page, &mut report).await?;
            position = last;
            if let Some(f) = &self.progress {
                f(&Progress {
                    position,
                    head: until,
                    report,
                });
            }
            if !full || last >= until {
                return Ok(report);
            }
        }
    }

    /// A selective replay's page: applied without moving the checkpoint,
    /// with the same retry / stop / dead-letter handling.
    async fn reapply_page(&self, page: &[RecordedEvent], report: &mut ProjectionReport) -> Result<(), ProjectionError> {
        let mut rest = page;
        let mut one_by_one = false;
        while !rest.is_empty() {
            let take = if one_by_one { 1 } else { rest.len() };
            let chunk = &rest[..take];
            match self.unit.apply(chunk, None).await {
                Ok(()) => {
                    report.applied += chunk.len() as u64;
                    rest = &rest[take..];
                }
                Err(UnitError::Moved { .. }) => return Err(self.unexpected_move()),
                Err(UnitError::Store(e)) => return Err(self.store_err(e)),
                Err(UnitError::Apply { applied, index, error }) => {
                    let applied = applied.min(chunk.len());
                    report.applied += applied as u64;
                    rest = &rest[applied..];
                    if index.is_none() && chunk.len() > 1 {
                        one_by_one = true;
                        continue;
                    }
                    let Some(event) = rest.first() else {
                        break;
                    };
                    let mut attempt = 1;
                    let mut error = error;
                    loop {
                        if error.is::<Undecodable>() || !self.config.retry.should_retry(attempt) {
                            self.give_up(event, error, attempt, None).await?;
                            report.dead_lettered += 1;
                            break;
                        }
                        tokio::time::sleep(self.config.retry.delay_after(attempt)).await;
                        attempt += 1;
                        match self.unit.apply(std::slice::from_ref(event), None).await {
                            Ok(()) => {
                                report.applied += 1;
                                break;
                            }
                            Err(UnitError::Apply { error: e, .. }) => error = e,
                            Err(UnitError::Store(e)) => return Err(self.store_err(e)),
                            Err(UnitError::Moved { .. }) => return Err(self.unexpected_move()),
                        }
                    }
                    rest = &rest[1..];
                    one_by_one = false;
                }
            }
        }
        Ok(())
    }

    /// Applies the dead-lettered event at `position` again and removes the
    /// letter (atomically, on a transactional unit); whether there was one.
    pub async fn retry_dead_letter(&self, position: u64) -> Result<bool, ProjectionError> {
        let event = self
            .store
            .read_all(position.saturating_sub(1), 1, &EventFilter::all())
            .await
            .map_err(|e| self.store_err(e))?
            .into_iter()
            .find(|e| e.global_position == position)
            .ok_or_else(|| ProjectionError::NoSuchEvent {
                projection: self.unit.name().to_owned(),
                position,
            })?;
        match self.unit.resolve_dead_letter(position, Some(&event)).await {
            Ok(found) => Ok(found),
            Err(UnitError::Store(e)) => Err(self.store_err(e)),
            Err(UnitError::Apply { error, .. }) => Err(ProjectionError::Stopped {
                projection: self.unit.name().to_owned(),
                position,
                event_type: event.event_type.clone(),
                attempts: 1,
                error: error.to_string(),
            }),
            Err(UnitError::Moved { .. }) => Err(self.unexpected_move()),
        }
    }

    /// Removes the dead letter at `position` without applying its event;
    /// whether there was one.
    pub async fn skip_dead_letter(&self, position: u64) -> Result<bool, ProjectionError> {
        match self.unit.resolve_dead_letter(position, None).await {
            Ok(found) => Ok(found),
            Err(UnitError::Store(e)) => Err(self.store_err(e)),
            Err(other) => Err(self.store_err(StoreError::backend("skip dead letter", other))),
        }
    }

    /// Units report [`UnitError::Moved`] only for an [`Advance`]; a unit
    /// that reports it for a call without one is broken.
    fn unexpected_move(&self) -> ProjectionError {
        self.store_err(StoreError::backend(
            "apply without a checkpoint move",
            "the projection unit reported a moved checkpoint",
        ))
    }

    /// The dead letters, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, ProjectionError> {
        self.unit.dead_letters().await.map_err(|e| self.store_err(e))
    }
}
