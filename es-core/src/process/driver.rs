//! [`ProcessDriver`]: moves processes forward, one recorded step at a time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use uuid::Uuid;

use super::{step_command_id, DeadlineStore, InMemoryDeadlines, ProcessManager};
use crate::error::BoxError;
use crate::{
    Aggregate, Clock, CommandContext, Metadata, PageFailure, RecordedEvent, Repository, RepositoryError, StoreError,
    StreamId, SystemClock,
};

/// The deadlines of the states a drive loaded: the earliest, and the last
/// state's.
#[derive(Default)]
struct DeadlineSeen {
    earliest: Option<chrono::DateTime<chrono::Utc>>,
    last: Option<chrono::DateTime<chrono::Utc>>,
}

/// Settings of a [`ProcessDriver`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessConfig {
    /// Processes of one page driven at once.
    pub concurrency: usize,
    /// Steps one drive may take before it gives up (a process whose
    /// outcome commands record nothing would otherwise loop).
    pub max_steps: u32,
    /// How often [`run_deadlines`](ProcessDriver::run_deadlines) looks
    /// for passed deadlines.
    pub deadline_interval: Duration,
    /// Deadlines handled per look.
    pub deadline_batch: usize,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            max_steps: 32,
            deadline_interval: Duration::from_secs(1),
            deadline_batch: 256,
        }
    }
}

/// Why a process did not move forward. All but [`ProcessError::Refused`]
/// and [`ProcessError::Runaway`] are usually transient; the runner retries
/// the event, then stops or dead-letters it by its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Loading the process or recording a fact failed.
    #[error("process {process_id}: {source}")]
    Store {
        /// The process.
        process_id: StreamId,
        /// The repository's error.
        #[source]
        source: BoxError,
    },
    /// Issuing a step failed (the step is issued again later).
    #[error("process {process_id}, step {step}: {source}")]
    Issue {
        /// The process.
        process_id: StreamId,
        /// The step.
        step: String,
        /// The manager's error.
        #[source]
        source: BoxError,
    },
    /// The process aggregate refused to record a fact: a bug in the
    /// process definition.
    #[error("process {process_id} refused to record {what}: {reason}")]
    Refused {
        /// The process.
        process_id: StreamId,
        /// What was being recorded.
        what: String,
        /// Why.
        reason: String,
    },
    /// A drive took more than `max_steps` steps.
    #[error("process {process_id} took more than {steps} steps in one drive")]
    Runaway {
        /// The process.
        process_id: StreamId,
        /// The limit.
        steps: u32,
    },
    /// The deadline store failed.
    #[error("deadlines: {0}")]
    Deadlines(#[from] StoreError),
}

/// Drives the processes of one [`ProcessManager`]: load the process, ask
/// for the next step, issue it under its [`step_command_id`], record the
/// outcome in the process stream, and again, until the process is done or
/// waiting.
///
/// Run it with [`ProcessUnit`](super::ProcessUnit) (or es-postgres's
/// `PgProcess`) on a [`ProjectionRunner`](crate::ProjectionRunner),
/// and [`run_deadlines`](Self::run_deadlines) beside it when the manager
/// has deadlines.
///
/// Metrics: `es_process_steps_total{process, outcome}` (`issued`,
/// `failed`), `es_process_deadlines_total{process}`.
pub struct ProcessDriver<M: ProcessManager> {
    manager: Arc<M>,
    repo: Repository<M::Process>,
    deadlines: Arc<dyn DeadlineStore>,
    clock: Arc<dyn Clock>,
    config: ProcessConfig,
}

impl<M: ProcessManager> std::fmt::Debug for ProcessDriver<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessDriver")
            .field("process", &self.manager.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

type Outcome<M> = <<M as ProcessManager>::Process as Aggregate>::Command;

impl<M: ProcessManager> ProcessDriver<M> {
    /// A driver of `manager`'s processes kept by `repo`, with in-memory
    /// deadlines, the system clock and the default configuration.
    pub fn new(manager: Arc<M>, repo: Repository<M::Process>) -> Self {
        Self {
            manager,
            repo,
            deadlines: Arc::new(InMemoryDeadlines::new()),
            clock: Arc::new(SystemClock),
            config: ProcessConfig::default(),
        }
    }

    /// Keeps deadlines in `deadlines` (use a durable one so that they
    /// survive a restart).
    #[must_use]
    pub fn with_deadlines(mut self, deadlines: Arc<dyn DeadlineStore>) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Reads the time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the configuration.
    #[must_use]
    pub fn with_config(mut self, config: ProcessConfig) -> Self {
        self.config = config;
        self
    }

    /// The manager.
    pub fn manager(&self) -> &Arc<M> {
        &self.manager
    }

    /// The repository of the process streams.
    pub fn repository(&self) -> &Repository<M::Process> {
        &self.repo
    }

    /// The configuration.
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    fn store_err(process_id: &StreamId, e: RepositoryError<<M::Process as Aggregate>::Error>) -> ProcessError {
        match e {
            RepositoryError::Rejected(reason) => ProcessError::Refused {
                process_id: process_id.clone(),
                what: "a fact".into(),
                reason: reason.to_string(),
            },
            other => ProcessError::Store {
                process_id: process_id.clone(),
                source: Box::new(other),
            },
        }
    }

    /// Moves process `process_id` forward until it is finished or waiting.
    /// Idempotent: driving a process again (after a crash, on a replay)
    /// issues nothing that was recorded, and a step issued but not
    /// recorded is issued again under the same command id.
    pub async fn drive(&self, process_id: impl Into<StreamId>) -> Result<(), ProcessError> {
        self.drive_process(&process_id.into()).await
    }

    #[tracing::instrument(level = "debug", name = "es.process.drive", skip(self), fields(process = self.manager.name(), process_id = %process_id))]
    async fn drive_process(&self, process_id: &StreamId) -> Result<(), ProcessError> {
        let mut seen = DeadlineSeen::default();
        let driven = self.drive_steps(process_id, &mut seen).await;
        let Some(earliest) = seen.earliest else {
            return driven;
        };
        // Indexed however the drive ended, so that the timer sees the
        // process even when this drive failed and it is dead-lettered. A
        // drive that finished knows the deadline of the state as it stands;
        // one that failed may not (a fact may have been recorded after its
        // last load), so it indexes the earliest deadline it saw, never
        // none: the timer then loads the process and moves the entry.
        let at = if driven.is_ok() { seen.last } else { Some(earliest) };
        let indexed = self.deadlines.set(self.manager.name(), process_id, at).await;
        match (driven, indexed) {
            (Ok(()), indexed) => indexed.map_err(ProcessError::from),
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(index)) => {
                tracing::warn!(error = %index, "could not record the deadline");
                Err(e)
            }
        }
    }

    /// The steps of [`drive`](Self::drive), noting in `seen` the deadline
    /// of every state loaded.
    async fn drive_steps(&self, process_id: &StreamId, seen: &mut DeadlineSeen) -> Result<(), ProcessError> {
        let name = self.manager.name();
        for _ in 0..self.config.max_steps {
            let loaded = self
                .repo
                .load(process_id.as_str())
                .await
                .map_err(|e| Self::store_err(process_id, e))?;
            let now = self.clock.now();
            let due = self.manager.deadline(&loaded.state);
            seen.earliest = match (seen.earliest, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            seen.last = due;
            if due.is_some_and(|at| at <= now) {
                if let Some(record) = self.manager.on_deadline(&loaded.state, now) {
                    self.record_deadline(process_id, record, loaded.version).await?;
                    continue;
                }
            }
            let Some(step) = self.manager.next_step(&loaded.state) else {
                return Ok(());
            };
            let command_id = step_command_id(process_id, &step.name);
            let outcome = match self.manager.issue(process_id, &step, command_id).await {
                Ok(outcome) => outcome,
                Err(source) => {
                    metrics::counter!("es_process_steps_total", "process" => name.to_owned(), "outcome" => "failed")
                        .increment(1);
                    return Err(ProcessError::Issue {
                        process_id: process_id.clone(),
                        step: step.name,
                        source,
                    });
                }
            };
            metrics::counter!("es_process_steps_total", "process" => name.to_owned(), "outcome" => "issued")
                .increment(1);
            self.record_outcome(process_id, outcome, command_id).await?;
        }
        Err(ProcessError::Runaway {
            process_id: process_id.clone(),
            steps: self.config.max_steps,
        })
    }

    /// Records a step's outcome: a fact, recorded whatever else was
    /// recorded since, once (its event ids derive from the step's command
    /// id).
    async fn record_outcome(
        &self,
        process_id: &StreamId,
        outcome: Outcome<M>,
        step_id: Uuid,
    ) -> Result<(), ProcessError> {
        let ctx = CommandContext::default()
            .with_command_id(Uuid::new_v5(&step_id, b"outcome"))
            .with_metadata(Metadata {
                causation_id: Some(step_id),
                ..Metadata::default()
            });
        self.repo
            .execute_in(process_id.clone(), outcome, ctx)
            .await
            .map(|_| ())
            .map_err(|e| Self::store_err(process_id, e))
    }

    /// Records that the deadline passed, only on top of the version it was
    /// decided on (a fact recorded since wins; the caller looks again).
    /// Whether this call recorded it (not when a fact came first, nor when
    /// another timer or driver recorded it already).
    async fn record_deadline(
        &self,
        process_id: &StreamId,
        record: Outcome<M>,
        version: u64,
    ) -> Result<bool, ProcessError> {
        let id = step_command_id(process_id, "deadline");
        let ctx = CommandContext::default()
            .with_command_id(id)
            .expect_version(version)
            .with_metadata(Metadata {
                causation_id: Some(id),
                ..Metadata::default()
            });
        match self.repo.execute_in(process_id.clone(), record, ctx).await {
            Ok(outcome) if outcome.already_applied => Ok(false),
            Ok(_) => {
                metrics::counter!("es_process_deadlines_total", "process" => self.manager.name().to_owned())
                    .increment(1);
                tracing::info!(process = self.manager.name(), process_id = %process_id, "deadline passed");
                Ok(true)
            }
            Err(RepositoryError::Conflict { .. }) => Ok(false),
            Err(e) => Err(Self::store_err(process_id, e)),
        }
    }

    /// Drives every process `events` wake (each once, `concurrency` at a
    /// time). On failure, the index of the first event of the failed
    /// process that comes first in the page: every process woken before it
    /// was driven.
    pub async fn drive_page(&self, events: &[RecordedEvent]) -> Result<(), PageFailure> {
        let mut woken: Vec<(usize, StreamId)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, e) in events.iter().enumerate() {
            if let Some(pid) = self.manager.correlate(e) {
                if seen.insert(pid.clone()) {
                    woken.push((i, pid));
                }
            }
        }
        let results: Vec<(usize, Result<(), ProcessError>)> = futures::stream::iter(woken)
            .map(|(i, pid)| async move { (i, self.drive(&pid).await) })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        match results
            .into_iter()
            .filter_map(|(i, r)| r.err().map(|e| (i, e)))
            .min_by_key(|(i, _)| *i)
        {
            None => Ok(()),
            Some((i, e)) => Err(PageFailure::at(i, e)),
        }
    }

    /// Records the passed deadlines (up to `deadline_batch`): for each
    /// process due, the manager's [`on_deadline`](ProcessManager::on_deadline)
    /// fact, on top of the version it was decided on. The recorded fact
    /// wakes the runner, which does the rest. Returns how many were
    /// recorded; when a process fails (its stream unreadable, the store
    /// down), the others are still recorded, and the first failure is
    /// returned.
    #[tracing::instrument(level = "debug", name = "es.process.deadlines", skip(self), fields(process = self.manager.name()))]
    pub async fn record_due_deadlines(&self) -> Result<usize, ProcessError> {
        let name = self.manager.name();
        let now = self.clock.now();
        let due = self.deadlines.due(name, now, self.config.deadline_batch).await?;
        let mut recorded = 0;
        // A process that fails (its stream unreadable, say) is reported
        // once all the others had their turn: it comes first in every
        // later batch too, and must not hold back the deadlines after it.
        let mut first_error = None;
        for (process_id, _) in due {
            match self.record_due_deadline(&process_id, now).await {
                Ok(true) => recorded += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(process = name, %process_id, error = %e, "recording a passed deadline failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(recorded),
        }
    }

    /// Records `process_id`'s deadline if it passed by `now`, else moves
    /// the index to where its state says; returns whether it recorded one.
    async fn record_due_deadline(
        &self,
        process_id: &StreamId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, ProcessError> {
        let name = self.manager.name();
        let loaded = self
            .repo
            .load(process_id.as_str())
            .await
            .map_err(|e| Self::store_err(process_id, e))?;
        match self.manager.deadline(&loaded.state) {
            Some(at) if at <= now => match self.manager.on_deadline(&loaded.state, now) {
                Some(record) => self.record_deadline(process_id, record, loaded.version).await,
                None => {
                    self.deadlines.set(name, process_id, None).await?;
                    Ok(false)
                }
            },
            // Moved on (or later): the index follows the state.
            other => {
                self.deadlines.set(name, process_id, other).await?;
                Ok(false)
            }
        }
    }

    /// Records passed deadlines every `deadline_interval` until `shutdown`
    /// completes, logging failures and going on.
    pub async fn run_deadlines(&self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.record_due_deadlines().await {
                tracing::warn!(process = self.manager.name(), error = %e, "recording passed deadlines failed");
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.config.deadline_interval) => {}
            }
        }
    }
}
