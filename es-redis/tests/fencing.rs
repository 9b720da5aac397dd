//! Fencing end to end: a [`LockedRepository`] instance whose decision
//! stalls past its lease (a process pause: its lease renewal stalls too)
//! while a second instance takes the lock and writes, on PostgreSQL. The
//! stale holder's write is refused with `Fenced`, and nothing of it is
//! stored.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::*;
use es_core::{Aggregate, DomainEvent, Repository, RepositoryError};
use es_postgres::{testing, EventStoreConfig, PostgresEventStore};
use es_redis::{LockConfig, LockedError, LockedRepository, RedisLockManager, FENCING_TOKEN_HEADER};
use serde::{Deserialize, Serialize};

/// Opens when told; a closed gate blocks the calling thread.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Ledger {
    balance: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum LedgerEvent {
    Deposited(i64),
    Withdrawn(i64),
}

impl DomainEvent for LedgerEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Deposited(_) => "Deposited",
            Self::Withdrawn(_) => "Withdrawn",
        }
    }
}

enum LedgerCommand {
    Deposit(i64),
    Withdraw(i64),
    /// Deposits, after saying it started and blocking its thread until the
    /// gate opens: the whole instance stalls, as in a process pause.
    StalledDeposit(i64, mpsc::SyncSender<()>, Arc<Gate>),
}

impl Aggregate for Ledger {
    const TYPE: &'static str = "ledger";
    type Command = LedgerCommand;
    type Event = LedgerEvent;
    type Error = InsufficientFunds;

    fn handle(&self, command: &LedgerCommand) -> Result<Vec<LedgerEvent>, InsufficientFunds> {
        match command {
            LedgerCommand::Deposit(n) => Ok(vec![LedgerEvent::Deposited(*n)]),
            LedgerCommand::Withdraw(n) if *n > self.balance => Err(InsufficientFunds),
            LedgerCommand::Withdraw(n) => Ok(vec![LedgerEvent::Withdrawn(*n)]),
            LedgerCommand::StalledDeposit(n, started, gate) => {
                let _ = started.try_send(());
                gate.wait();
                Ok(vec![LedgerEvent::Deposited(*n)])
            }
        }
    }

    fn apply(&mut self, event: &LedgerEvent) {
        match event {
            LedgerEvent::Deposited(n) => self.balance += n,
            LedgerEvent::Withdrawn(n) => self.balance -= n,
        }
    }
}

/// One instance: its own PostgreSQL pool and store on `schema`, its own
/// lock manager.
async fn instance(schema: &str, prefix: &str, ttl: Duration) -> LockedRepository<Ledger, PostgresEventStore> {
    let config = EventStoreConfig {
        max_connections: 4,
        ..EventStoreConfig::with_schema(schema)
    };
    let store = Arc::new(
        PostgresEventStore::connect(&testing::database_url(), config)
            .await
            .unwrap(),
    );
    let locks = RedisLockManager::new(LockConfig {
        // Waits out another holder's lease (a minute at most).
        retry_attempts: 3000,
        retry_delay: Duration::from_millis(20),
        ..lock_config(prefix)
    })
    .unwrap();
    LockedRepository::new(Repository::builder(store).build(), Arc::new(locks), ttl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_lock_holder_is_fenced_off_on_postgres() {
    let p = prefix();
    let schema = testing::fresh_schema("fence");
    let setup = testing::store(EventStoreConfig::with_schema(schema.clone()))
        .await
        .unwrap();
    drop(setup);
    let fresh = instance(&schema, &p, Duration::from_secs(30)).await;
    fresh.execute("acct", LedgerCommand::Deposit(10)).await.unwrap();

    // The stale instance runs on a thread and runtime of its own, so that
    // its blocked decision stalls everything it does, lease renewal too.
    let (started_tx, started) = mpsc::sync_channel(1);
    let gate = Arc::new(Gate::default());
    let stale = std::thread::spawn({
        let (schema, p, gate) = (schema.clone(), p.clone(), Arc::clone(&gate));
        move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // A short lease, so the test need not wait long for it to lapse.
                let stale = instance(&schema, &p, Duration::from_millis(500)).await;
                stale
                    .execute("acct", LedgerCommand::StalledDeposit(1000, started_tx, gate))
                    .await
            })
        }
    });
    tokio::task::spawn_blocking(move || started.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the stale holder decided under its lock");

    // The second holder waits until the stalled lease lapses, then writes.
    let out = fresh.execute("acct", LedgerCommand::Withdraw(10)).await.unwrap();
    assert_eq!((out.version, out.state.balance), (2, 0));
    let fresh_token: u64 = out.events[0].metadata.headers[FENCING_TOKEN_HEADER].parse().unwrap();

    gate.open();
    let stale_result = tokio::task::spawn_blocking(move || stale.join().unwrap())
        .await
        .unwrap();
    match stale_result {
        Err(LockedError::Repository(RepositoryError::Fenced { token, newer, .. })) => {
            assert_eq!(newer, fresh_token);
            assert!(token < newer);
        }
        other => panic!("the stale holder's write must be fenced off, got {other:?}"),
    }
    let history = fresh.repository().history("acct").await.unwrap();
    assert_eq!(history.len(), 2, "nothing of the stale holder was written");
    assert!(history.iter().all(|e| e.event != LedgerEvent::Deposited(1000)));
    assert_eq!(fresh.repository().load("acct").await.unwrap().state.balance, 0);
    cleanup(&p).await;
}
