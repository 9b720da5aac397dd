//! Property tests of the shopping cart with the es-core test kit.

use es_core::testing::{AggregateTest, Properties};
use es_examples::shopping_cart::{Cart, CartCommand, CartError, CartEvent};
use proptest::prelude::*;

fn command() -> impl Strategy<Value = CartCommand> {
    let sku = prop::sample::select(vec!["apple", "pear", "plum"]).prop_map(str::to_owned);
    prop_oneof![
        4 => (sku.clone(), 0u32..5).prop_map(|(sku, quantity)| CartCommand::Add { sku, quantity }),
        3 => (sku, 0u32..5).prop_map(|(sku, quantity)| CartCommand::Remove { sku, quantity }),
        1 => Just(CartCommand::CheckOut),
    ]
}

proptest! {
    #[test]
    fn cart_properties_hold_for_any_command_sequence(commands in prop::collection::vec(command(), 0..60)) {
        let outcome = Properties::<Cart>::new()
            .invariant("no empty lines", |c: &Cart| {
                if c.items.values().all(|&q| q > 0) { Ok(()) } else { Err("a line with quantity 0".into()) }
            })
            .invariant("checked-out carts are not empty", |c: &Cart| {
                if !c.checked_out || c.item_count() > 0 { Ok(()) } else { Err("empty checked-out cart".into()) }
            })
            .check(&commands)?;
        // The count equals added minus removed over the accepted events.
        let net: i64 = outcome.events.iter().map(|e| match e {
            CartEvent::ItemAdded { quantity, .. } => i64::from(*quantity),
            CartEvent::ItemRemoved { quantity, .. } => -i64::from(*quantity),
            CartEvent::CheckedOut => 0,
        }).sum();
        prop_assert_eq!(net, outcome.state.item_count() as i64);
        prop_assert_eq!(outcome.accepted + outcome.rejected, commands.len());
    }
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
