//! Property tests of the shopping cart with the es-core test kit.

use std::sync::atomic::{AtomicU32, Ordering};

use es_core::testing::{AggregateTest, Properties};
use es_core::{Aggregate, DomainEvent};
use es_examples::shopping_cart::{Cart, CartCommand, CartError, CartEvent};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestError, TestRunner};
use serde::{Deserialize, Serialize};

fn command() -> impl Strategy<Value = CartCommand> {
    let sku = prop::sample::select(vec!["apple", "pear", "plum"]).prop_map(str::to_owned);
    prop_oneof![
        4 => (sku.clone(), 0u32..5).prop_map(|(sku, quantity)| CartCommand::Add { sku, quantity }),
        3 => (sku, 0u32..5).prop_map(|(sku, quantity)| CartCommand::Remove { sku, quantity }),
        1 => Just(CartCommand::CheckOut),
    ]
}

/// The cart's property check: the kit's built-in properties plus the
/// cart's invariants, one of them a model of `apply` over the history.
fn cart_properties<A: Aggregate<Event = CartEvent> + AsCart>() -> Properties<A> {
    Properties::<A>::new()
        .invariant("no empty lines", |c: &A| {
            if c.cart().items.values().all(|&q| q > 0) {
                Ok(())
            } else {
                Err("a line with quantity 0".into())
            }
        })
        .invariant("checked-out carts are not empty", |c: &A| {
            let c = c.cart();
            if !c.checked_out || c.item_count() > 0 {
                Ok(())
            } else {
                Err("empty checked-out cart".into())
            }
        })
        .history_invariant("the count is added minus removed", |c: &A, events: &[CartEvent]| {
            let net: i64 = events
                .iter()
                .map(|e| match e {
                    CartEvent::ItemAdded { quantity, .. } => i64::from(*quantity),
                    CartEvent::ItemRemoved { quantity, .. } => -i64::from(*quantity),
                    CartEvent::CheckedOut => 0,
                })
                .sum();
            let count = c.cart().item_count() as i64;
            if net == count {
                Ok(())
            } else {
                Err(format!("events say {net} items, the cart holds {count}"))
            }
        })
}

/// Access to the cart inside the broken variants below.
trait AsCart {
    fn cart(&self) -> &Cart;
}

impl AsCart for Cart {
    fn cart(&self) -> &Cart {
        self
    }
}

proptest! {
    #[test]
    fn cart_properties_hold_for_any_command_sequence(commands in prop::collection::vec(command(), 0..60)) {
        let outcome = cart_properties::<Cart>().check(&commands)?;
        prop_assert_eq!(outcome.accepted + outcome.rejected, commands.len());
    }
}

/// Runs the kit's property check the way `proptest!` does (random command
/// sequences, shrinking) and returns the failure it reports.
fn kit_failure<A: Aggregate<Command = CartCommand> + std::fmt::Debug>(properties: Properties<A>) -> String {
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    match runner.run(&prop::collection::vec(command(), 0..60), |commands| {
        properties.check(&commands).map(|_| ())
    }) {
        Ok(()) => panic!("the kit passed a broken aggregate"),
        Err(TestError::Fail(why, commands)) => format!("{why} (commands: {commands:?})"),
        Err(TestError::Abort(why)) => panic!("the kit aborted: {why}"),
    }
}

/// A cart whose `handle` is not deterministic: the quantity of an addition
/// depends on a global counter.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct NondeterministicCart(Cart);

static CALLS: AtomicU32 = AtomicU32::new(0);

impl AsCart for NondeterministicCart {
    fn cart(&self) -> &Cart {
        &self.0
    }
}

impl Aggregate for NondeterministicCart {
    const TYPE: &'static str = "cart";
    type Command = CartCommand;
    type Event = CartEvent;
    type Error = CartError;

    fn handle(&self, command: &CartCommand) -> Result<Vec<CartEvent>, CartError> {
        let mut events = self.0.handle(command)?;
        for e in &mut events {
            if let CartEvent::ItemAdded { quantity, .. } = e {
                *quantity += CALLS.fetch_add(1, Ordering::Relaxed) % 2;
            }
        }
        Ok(events)
    }

    fn apply(&mut self, event: &CartEvent) {
        self.0.apply(event);
    }
}

#[test]
fn the_kit_catches_a_nondeterministic_handle() {
    let why = kit_failure(cart_properties::<NondeterministicCart>());
    assert!(why.contains("handle is not deterministic"), "{why}");
}

/// A cart whose `apply` loses a field of the event: every addition counts
/// as one item, whatever its quantity.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct LossyApplyCart(Cart);

impl AsCart for LossyApplyCart {
    fn cart(&self) -> &Cart {
        &self.0
    }
}

impl Aggregate for LossyApplyCart {
    const TYPE: &'static str = "cart";
    type Command = CartCommand;
    type Event = CartEvent;
    type Error = CartError;

    fn handle(&self, command: &CartCommand) -> Result<Vec<CartEvent>, CartError> {
        self.0.handle(command)
    }

    fn apply(&mut self, event: &CartEvent) {
        match event {
            CartEvent::ItemAdded { sku, .. } => self.0.apply(&CartEvent::ItemAdded {
                sku: sku.clone(),
                quantity: 1,
            }),
            other => self.0.apply(other),
        }
    }
}

#[test]
fn the_kit_catches_an_apply_that_loses_a_field() {
    let why = kit_failure(cart_properties::<LossyApplyCart>());
    assert!(why.contains("the count is added minus removed"), "{why}");
}

/// A cart that keeps a field of its state out of snapshots although its
/// decisions depend on it: a restored cart forgets it was checked out.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct ForgetfulCart {
    items: std::collections::BTreeMap<String, u32>,
    #[serde(skip)]
    checked_out: bool,
}

impl Aggregate for ForgetfulCart {
    const TYPE: &'static str = "cart";
    type Command = CartCommand;
    type Event = CartEvent;
    type Error = CartError;

    fn handle(&self, command: &CartCommand) -> Result<Vec<CartEvent>, CartError> {
        Cart {
            items: self.items.clone(),
            checked_out: self.checked_out,
        }
        .handle(command)
    }

    fn apply(&mut self, event: &CartEvent) {
        let mut cart = Cart {
            items: std::mem::take(&mut self.items),
            checked_out: self.checked_out,
        };
        cart.apply(event);
        (self.items, self.checked_out) = (cart.items, cart.checked_out);
    }
}

#[test]
fn the_kit_catches_a_state_field_lost_by_snapshots() {
    let why = kit_failure(Properties::<ForgetfulCart>::new());
    assert!(why.contains("restored from a snapshot decides differently"), "{why}");
}

/// An event that does not round-trip through serde: the quantity is left
/// out of the stored payload (both sides of the comparison serialize
/// alike, so only its effect shows it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum LossyEvent {
    Added {
        sku: String,
        #[serde(skip, default)]
        quantity: u32,
    },
    Removed {
        sku: String,
        quantity: u32,
    },
    CheckedOut,
}

impl DomainEvent for LossyEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Added { .. } => "ItemAdded",
            Self::Removed { .. } => "ItemRemoved",
            Self::CheckedOut => "CheckedOut",
        }
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct LossyEventCart(Cart);

impl Aggregate for LossyEventCart {
    const TYPE: &'static str = "cart";
    type Command = CartCommand;
    type Event = LossyEvent;
    type Error = CartError;

    fn handle(&self, command: &CartCommand) -> Result<Vec<LossyEvent>, CartError> {
        Ok(self
            .0
            .handle(command)?
            .into_iter()
            .map(|e| match e {
                CartEvent::ItemAdded { sku, quantity } => LossyEvent::Added { sku, quantity },
                CartEvent::ItemRemoved { sku, quantity } => LossyEvent::Removed { sku, quantity },
                CartEvent::CheckedOut => LossyEvent::CheckedOut,
            })
            .collect())
    }

    fn apply(&mut self, event: &LossyEvent) {
        self.0.apply(&match event.clone() {
            LossyEvent::Added { sku, quantity } => CartEvent::ItemAdded { sku, quantity },
            LossyEvent::Removed { sku, quantity } => CartEvent::ItemRemoved { sku, quantity },
            LossyEvent::CheckedOut => CartEvent::CheckedOut,
        });
    }
}

#[test]
fn the_kit_catches_an_event_that_does_not_round_trip() {
    let why = kit_failure(Properties::<LossyEventCart>::new());
    assert!(why.contains("decoded from the store applies differently"), "{why}");
}

#[test]
fn given_when_then() {
    AggregateTest::<Cart>::given([CartEvent::ItemAdded {
        sku: "apple".into(),
        quantity: 2,
    }])
    .when(CartCommand::Remove {
        sku: "apple".into(),
        quantity: 3,
    })
    .then_expect_error(|e| {
        *e == CartError::NotEnough {
            sku: "apple".into(),
            held: 2,
        }
    });

    AggregateTest::<Cart>::given([
        CartEvent::ItemAdded {
            sku: "apple".into(),
            quantity: 2,
        },
        CartEvent::CheckedOut,
    ])
    .when(CartCommand::CheckOut)
    .then_expect_error_message("cart is already checked out");

    AggregateTest::<Cart>::given_no_events()
        .when(CartCommand::Add {
            sku: "pear".into(),
            quantity: 1,
        })
        .then_expect_state(|c| assert_eq!(c.item_count(), 1));
}
