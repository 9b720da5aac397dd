//! [`ProcessUnit`]: a process manager as a projection unit, so the one
//! runner drives it.

use std::sync::Arc;

use async_trait::async_trait;

use super::{ProcessDriver, ProcessManager};
use crate::projection::drop_letters_after;
use crate::{
    Advance, CheckpointStore, DeadLetter, EventFilter, ProjectionRunner, ProjectionUnit, RecordedEvent, StoreError,
    UnitError,
};

/// Runs a [`ProcessDriver`] as a [`ProjectionUnit`] with a
/// [`CheckpointStore`] (in memory, es-sqlite's or es-postgres's): a page
/// of the log wakes its processes, which are driven, then the checkpoint
/// moves. A crash in between drives them again on restart, which is safe:
/// driving is idempotent. Operations are serialized, so runners of one
/// unit in a process take turns; across server instances use
/// es-postgres's `PgProcess`, which holds the projection's turn (an
/// advisory lock) while it drives.
///
/// A [`reset`](ProjectionUnit::reset) only moves the checkpoint to 0 (a
/// full replay drives every process again, which issues nothing that was
/// recorded).
pub struct ProcessUnit<M: ProcessManager> {
    driver: Arc<ProcessDriver<M>>,
    checkpoints: Arc<dyn CheckpointStore>,
    serial: tokio::sync::Mutex<()>,
}

impl<M: ProcessManager> ProcessUnit<M> {
    /// The unit of `driver`, keeping its checkpoint in `checkpoints`.
    pub fn new(driver: Arc<ProcessDriver<M>>, checkpoints: Arc<dyn CheckpointStore>) -> Self {
        Self {
            driver,
            checkpoints,
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// A runner of this unit over the driver's event store.
    pub fn runner(self) -> ProjectionRunner {
        let store = Arc::clone(self.driver.repository().store());
        ProjectionRunner::new(store, Arc::new(self))
    }

    fn name_str(&self) -> &str {
        self.driver.manager().name()
    }

    async fn check(&self, advance: Option<Advance>) -> Result<(), UnitError> {
        if let Some(a) = advance {
            let stored = self.checkpoints.load(self.name_str()).await?;
            if stored != a.from {
                return Err(UnitError::Moved { position: stored });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl<M: ProcessManager> ProjectionUnit for ProcessUnit<M> {
    fn name(&self) -> &str {
        self.name_str()
    }

    fn filter(&self) -> EventFilter {
        self.driver.manager().filter()
    }

    async fn position(&self) -> Result<u64, StoreError> {
        self.checkpoints.load(self.name_str()).await
    }

    async fn apply(&self, events: &[RecordedEvent], advance: Option<Advance>) -> Result<(), UnitError> {
        let _serial = self.serial.lock().await;
        self.check(advance).await?;
        if let Err(failure) = self.driver.drive_page(events).await {
            let applied = failure.index.unwrap_or(0);
            if let (Some(_), Some(prev)) = (advance, applied.checked_sub(1)) {
                self.checkpoints
                    .save(self.name_str(), events[prev].global_position)
                    .await?;
            }
            return Err(UnitError::Apply {
                applied,
                index: failure.index,
                error: failure.error,
            });
        }
        if let Some(a) = advance {
            self.checkpoints.save(self.name_str(), a.to).await?;
        }
        Ok(())
    }

    async fn dead_letter(&self, letter: DeadLetter, advance: Option<Advance>) -> Result<(), UnitError> {
        let _serial = self.serial.lock().await;
        self.check(advance).await?;
        self.checkpoints.dead_letter(letter).await?;
        if let Some(a) = advance {
            self.checkpoints.save(self.name_str(), a.to).await?;
        }
        Ok(())
    }

    async fn reset(&self) -> Result<(), UnitError> {
        let _serial = self.serial.lock().await;
        self.checkpoints.save(self.name_str(), 0).await?;
        drop_letters_after(&*self.checkpoints, self.name_str(), 0).await?;
        Ok(())
    }

    async fn seek(&self, position: u64) -> Result<(), StoreError> {
        let _serial = self.serial.lock().await;
        self.checkpoints.save(self.name_str(), position).await?;
        drop_letters_after(&*self.checkpoints, self.name_str(), position).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.checkpoints.dead_letters(self.name_str()).await
    }

    async fn resolve_dead_letter(&self, position: u64, event: Option<&RecordedEvent>) -> Result<bool, UnitError> {
        let _serial = self.serial.lock().await;
        let known = self
            .checkpoints
            .dead_letters(self.name_str())
            .await?
            .iter()
            .any(|l| l.global_position == position);
        if !known {
            return Ok(false);
        }
        if let Some(event) = event {
            self.driver
                .drive_page(std::slice::from_ref(event))
                .await
                .map_err(|f| UnitError::Apply {
                    applied: 0,
                    index: Some(0),
                    error: f.error,
                })?;
        }
        Ok(self.checkpoints.remove_dead_letter(self.name_str(), position).await?)
    }
}
