//! A process manager (saga): move money between two wallets — two
//! aggregates, so no single append can do it. The process's own stream
//! records what was asked and what happened; the driver issues each step
//! under a command id derived from (process, step), so a step issued again
//! (after a crash, on a second instance) applies once.
//!
//! Run with `cargo run -p es-examples --example process_manager`.

use std::sync::Arc;

use es_core::{
    Aggregate, BoxError, CommandContext, DomainEvent, InMemoryCheckpointStore, InMemoryEventStore, ProcessDriver,
    ProcessManager, ProcessUnit, Repository, RepositoryError, Step, StreamId,
};
use serde::{Deserialize, Serialize};

/// A wallet: the aggregate the process's steps act on.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Wallet {
    cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum WalletEvent {
    Changed { delta: i64 },
}

#[derive(Debug, thiserror::Error)]
#[error("insufficient funds")]
struct Insufficient;

impl Aggregate for Wallet {
    const TYPE: &'static str = "wallet";
    type Command = i64;
    type Event = WalletEvent;
    type Error = Insufficient;
    fn handle(&self, delta: &i64) -> Result<Vec<WalletEvent>, Insufficient> {
        if self.cents + delta < 0 {
            return Err(Insufficient);
        }
        Ok(vec![WalletEvent::Changed { delta: *delta }])
    }
    fn apply(&mut self, WalletEvent::Changed { delta }: &WalletEvent) {
        self.cents += delta;
    }
}

/// The process: one transfer, and the facts recorded about it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Transfer {
    from: String,
    to: String,
    cents: i64,
    debited: bool,
    credited: bool,
    refused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum TransferEvent {
    Requested { from: String, to: String, cents: i64 },
    Debited,
    Credited,
    Refused,
}

impl Aggregate for Transfer {
    const TYPE: &'static str = "transfer";
    // The process records facts: its commands are the events themselves.
    type Command = TransferEvent;
    type Event = TransferEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, fact: &TransferEvent) -> Result<Vec<TransferEvent>, Self::Error> {
        Ok(vec![fact.clone()])
    }
    fn apply(&mut self, event: &TransferEvent) {
        match event {
            TransferEvent::Requested { from, to, cents } => {
                (self.from, self.to, self.cents) = (from.clone(), to.clone(), *cents);
            }
            TransferEvent::Debited => self.debited = true,
            TransferEvent::Credited => self.credited = true,
            TransferEvent::Refused => self.refused = true,
        }
    }
}

// ANCHOR: manager
/// What to do next, given the facts; and how to do it.
struct Transfers {
    wallets: Repository<Wallet>,
}

#[es_core::async_trait]
impl ProcessManager for Transfers {
    type Process = Transfer;
    /// (wallet, delta)
    type Command = (String, i64);

    fn name(&self) -> &str {
        "transfers"
    }

    fn next_step(&self, t: &Transfer) -> Option<Step<(String, i64)>> {
        if t.from.is_empty() || t.refused || t.credited {
            None
        } else if !t.debited {
            Some(Step::new("debit", (t.from.clone(), -t.cents)))
        } else {
            Some(Step::new("credit", (t.to.clone(), t.cents)))
        }
    }

    async fn issue(&self, _: &StreamId, step: &Step<(String, i64)>, id: uuid::Uuid) -> Result<TransferEvent, BoxError> {
        let (wallet, delta) = &step.command;
        let ctx = CommandContext::default().with_command_id(id);
        match self.wallets.execute_in(wallet.as_str(), *delta, ctx).await {
            Ok(_) if *delta < 0 => Ok(TransferEvent::Debited),
            Ok(_) => Ok(TransferEvent::Credited),
            Err(RepositoryError::Rejected(Insufficient)) => Ok(TransferEvent::Refused),
            Err(e) => Err(Box::new(e)),
        }
    }
}
// ANCHOR_END: manager

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(InMemoryEventStore::new());
    let wallets = Repository::<Wallet>::builder(store.clone()).build();
    let transfers = Repository::<Transfer>::builder(store.clone()).build();
    wallets.execute("alice", 100).await?;

    // Requests are just facts in the process's stream.
    let request = |from: &str, cents| TransferEvent::Requested {
        from: from.into(),
        to: "bob".into(),
        cents,
    };
    transfers.execute("transfer-1", request("alice", 70)).await?;
    transfers.execute("transfer-2", request("alice", 70)).await?; // only 30 left by then

    // ANCHOR: run
    // The driver runs on the one projection engine, following the log.
    let driver = Arc::new(ProcessDriver::new(
        Arc::new(Transfers {
            wallets: wallets.clone(),
        }),
        transfers.clone(),
    ));
    let runner = ProcessUnit::new(driver.clone(), Arc::new(InMemoryCheckpointStore::new())).runner();
    runner.catch_up().await?;
    // ANCHOR_END: run

    let (t1, t2) = (
        transfers.load("transfer-1").await?.state,
        transfers.load("transfer-2").await?.state,
    );
    let (alice, bob) = (
        wallets.load("alice").await?.state.cents,
        wallets.load("bob").await?.state.cents,
    );
    println!(
        "transfer-1 credited: {}, transfer-2 refused: {}",
        t1.credited, t2.refused
    );
    println!("alice {alice}, bob {bob}");
    assert!(t1.debited && t1.credited && t2.refused && !t2.debited);
    assert_eq!((alice, bob), (30, 70));

    // Driving a finished process again (as after a crash before its
    // checkpoint moved) issues nothing twice.
    driver.drive("transfer-1").await?;
    assert_eq!(wallets.load("alice").await?.state.cents, 30);
    assert_eq!(wallets.load("bob").await?.state.cents, 70);
    Ok(())
}
