//! es-core benchmarks: rehydration through the codec, in-memory appends.
//!
//! Run: `cargo bench -p es-core --bench core`
// criterion_group! defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use es_core::{
    Aggregate, DomainEvent, EventCodec, EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, StreamId,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Account {
    balance: i64,
    transactions: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { amount: i64, reference: String },
    Withdrawn { amount: i64, reference: String },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Deposited { .. } => "Deposited",
            Self::Withdrawn { .. } => "Withdrawn",
        }
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = ();
    type Event = AccountEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, (): &()) -> Result<Vec<AccountEvent>, Self::Error> {
        Ok(vec![])
    }
    fn apply(&mut self, e: &AccountEvent) {
        match e {
            AccountEvent::Deposited { amount, .. } => self.balance += amount,
            AccountEvent::Withdrawn { amount, .. } => self.balance -= amount,
        }
        self.transactions += 1;
    }
}

fn rehydrate(c: &mut Criterion) {
    let codec = EventCodec::default();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let store = InMemoryEventStore::new();
    let id = StreamId::from("acc-1");
    runtime.block_on(async {
        for chunk in 0..10 {
            let events = (0..1000)
                .map(|i| {
                    let e = if i % 3 == 0 {
                        AccountEvent::Withdrawn {
                            amount: 5,
                            reference: format!("tx-{chunk}-{i}"),
                        }
                    } else {
                        AccountEvent::Deposited {
                            amount: 10,
                            reference: format!("tx-{chunk}-{i}"),
                        }
                    };
                    NewEvent::new(e.event_type(), codec.encode(&e).expect("encode"))
                })
                .collect();
            store
                .append("account", &id, ExpectedVersion::Any, events)
                .await
                .expect("append");
        }
    });
    let records = runtime.block_on(async {
        use futures::TryStreamExt;
        store.read_stream(&id, 1).try_collect::<Vec<_>>().await.expect("read")
    });
    let mut group = c.benchmark_group("rehydrate");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("decode_and_apply_10k_events", |b| {
        b.iter(|| {
            let mut state = Account::default();
            for r in &records {
                let e: AccountEvent = codec.decode(r).expect("decode");
                state.apply(&e);
            }
            state
        });
    });
    group.bench_function("read_decode_apply_10k_from_memory_store", |b| {
        b.to_async(&runtime).iter(|| async {
            use futures::TryStreamExt;
            let mut state = Account::default();
            let mut events = store.read_stream(&id, 1);
            while let Some(r) = events.try_next().await.expect("read") {
                let e: AccountEvent = codec.decode(&r).expect("decode");
                state.apply(&e);
            }
            state
        });
    });
    group.finish();
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let payload = serde_json::json!({"Deposited": {"amount": 10, "reference": "tx"}});
    let mut group = c.benchmark_group("memory_append");
    for tasks in [1usize, 8] {
        let per_task = 1000;
        group.throughput(Throughput::Elements((tasks * per_task) as u64));
        group.bench_function(format!("single_event_appends_{tasks}_tasks"), |b| {
            b.to_async(&runtime).iter_batched(
                || Arc::new(InMemoryEventStore::new()),
                |store| {
                    let payload = payload.clone();
                    async move {
                        let handles: Vec<_> = (0..tasks)
                            .map(|t| {
                                let store = Arc::clone(&store);
                                let payload = payload.clone();
                                tokio::spawn(async move {
                                    let id = StreamId::from(format!("s-{t}"));
                                    for v in 0..per_task as u64 {
                                        store
                                            .append(
                                                "account",
                                                &id,
                                                ExpectedVersion::Exact(v),
                                                vec![NewEvent::new("Deposited", payload.clone())],
                                            )
                                            .await
                                            .expect("append");
                                    }
                                })
                            })
                            .collect();
                        for h in handles {
                            h.await.expect("task");
                        }
                    }
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, rehydrate, append);
criterion_main!(benches);
