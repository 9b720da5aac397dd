//! Given/when/then and property tests of the account aggregate.

use es_core::testing::{AggregateTest, Properties};
use es_core::EventValidator;
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;

fn m(s: &str) -> Money {
    s.parse().unwrap()
}

fn created(balance: &str) -> AccountEvent {
    AccountEvent::AccountCreated(AccountCreated {
        owner_name: "Ada".into(),
        initial_balance: m(balance),
        owner_id: None,
    })
}

#[test]
fn opens_with_trimmed_name() {
    AggregateTest::<Account>::given_no_events()
        .when(AccountCommand::Open {
            owner_name: "  Ada ".into(),
            initial_balance: m("10"),
            owner_id: None,
        })
        .then_expect_events(vec![created("10")]);
}

#[test]
fn cannot_open_twice_or_without_name() {
    AggregateTest::<Account>::given([created("0")])
        .when(AccountCommand::Open {
            owner_name: "Bob".into(),
            initial_balance: m("1"),
            owner_id: None,
        })
        .then_expect_error(|e| *e == AccountError::AlreadyExists);
    AggregateTest::<Account>::given_no_events()
        .when(AccountCommand::Open {
            owner_name: "  ".into(),
            initial_balance: m("1"),
            owner_id: None,
        })
        .then_expect_error_message("owner_name is required");
}

#[test]
fn deposit_and_withdraw_move_the_balance() {
    AggregateTest::<Account>::given([created("0.1")])
        .when(AccountCommand::Deposit { amount: m("0.2") })
        .then_expect_state(|a| assert_eq!(a.balance.to_string(), "0.30"));
    AggregateTest::<Account>::given([created("5")])
        .when(AccountCommand::Withdraw { amount: m("5") })
        .then_expect_state(|a| assert!(a.balance.is_zero()));
}

#[test]
fn no_overdraft() {
    AggregateTest::<Account>::given([created("5")])
        .when(AccountCommand::Withdraw { amount: m("5.01") })
        .then_expect_error_message("insufficient funds: balance 5.00, requested 5.01");
}

#[test]
fn zero_amounts_and_unknown_accounts_are_refused() {
    AggregateTest::<Account>::given([created("5")])
        .when(AccountCommand::Deposit { amount: Money::ZERO })
        .then_expect_error(|e| matches!(e, AccountError::Invalid(_)));
    AggregateTest::<Account>::given_no_events()
        .when(AccountCommand::Deposit { amount: m("1") })
        .then_expect_error(|e| *e == AccountError::NotFound);
}

#[test]
fn closing_needs_zero_balance_and_is_final() {
    AggregateTest::<Account>::given([created("5")])
        .when(AccountCommand::Close { reason: "bye".into() })
        .then_expect_error(|e| matches!(e, AccountError::NonZeroBalance { .. }));
    let closed = AccountEvent::AccountClosed(AccountClosed { reason: "bye".into() });
    AggregateTest::<Account>::given([created("0"), closed.clone()])
        .when(AccountCommand::Deposit { amount: m("1") })
        .then_expect_error(|e| *e == AccountError::Closed);
    AggregateTest::<Account>::given([created("0"), closed])
        .when(AccountCommand::Close { reason: "again".into() })
        .then_expect_error(|e| *e == AccountError::Closed);
}

#[test]
fn max_transaction_policy() {
    let policy = MaxTransactionAmount { max: m("100") };
    let state = Account::default();
    assert!(policy.validate(&state, &[created("100")]).is_ok());
    let err = policy
        .validate(
            &state,
            &[AccountEvent::MoneyDeposited(MoneyDeposited { amount: m("100.01") })],
        )
        .unwrap_err();
    assert_eq!(err, "amount must not exceed 100.00");
}

fn command() -> impl Strategy<Value = AccountCommand> {
    let cents = 0u64..50_000;
    prop_oneof![
        1 => ("[ a-z]{0,6}", cents.clone()).prop_map(|(n, c)| AccountCommand::Open {
            owner_name: n,
            initial_balance: Money::from_cents(c),
            owner_id: None,
        }),
        4 => cents.clone().prop_map(|c| AccountCommand::Deposit { amount: Money::from_cents(c) }),
        4 => cents.prop_map(|c| AccountCommand::Withdraw { amount: Money::from_cents(c) }),
        1 => "[a-z]{0,4}".prop_map(|reason| AccountCommand::Close { reason }),
    ]
}

fn signed_sum(events: &[AccountEvent]) -> Decimal {
    events.iter().fold(Decimal::ZERO, |acc, e| match e {
        AccountEvent::AccountCreated(c) => acc + c.initial_balance.value(),
        AccountEvent::MoneyDeposited(d) => acc + d.amount.value(),
        AccountEvent::MoneyWithdrawn(w) => acc - w.amount.value(),
        AccountEvent::TransferDebited(e) => acc - e.amount.value(),
        AccountEvent::TransferCredited(e) => acc + e.amount.value(),
        AccountEvent::TransferRefunded(e) => acc + e.amount.value(),
        AccountEvent::AccountClosed(_) | AccountEvent::TransferSettled(_) | AccountEvent::TransferVoided(_) => acc,
    })
}

mod transfers {
    use es_core::testing::AggregateTest;
    use uuid::Uuid;

    use crate::domain::*;

    fn opened(cents: u64) -> Vec<AccountEvent> {
        vec![AccountEvent::AccountCreated(AccountCreated {
            owner_name: "A".into(),
            initial_balance: Money::from_cents(cents),
            owner_id: None,
        })]
    }

    const T: Uuid = Uuid::from_u128(7);
    const TO: Uuid = Uuid::from_u128(8);

    fn debited(cents: u64) -> AccountEvent {
        AccountEvent::TransferDebited(TransferDebited {
            transfer: T,
            to: TO,
            amount: Money::from_cents(cents),
        })
    }

    fn debit(cents: u64) -> AccountCommand {
        AccountCommand::DebitForTransfer {
            transfer: T,
            to: TO,
            amount: Money::from_cents(cents),
        }
    }

    #[test]
    fn a_debit_needs_the_funds_and_is_recorded_against_the_transfer() {
        AggregateTest::<Account>::given(opened(100))
            .when(debit(101))
            .then_expect_error(|e| matches!(e, AccountError::InsufficientFunds { .. }));
        AggregateTest::<Account>::given(opened(100))
            .when(debit(100))
            .then_expect_events(vec![debited(100)]);
        let mut events = opened(100);
        events.push(debited(40));
        AggregateTest::<Account>::given(events.clone())
            .when(debit(40))
            .then_expect_events(vec![]);
        AggregateTest::<Account>::given(events)
            .when(debit(1))
            .then_expect_state(|a| {
                assert_eq!(
                    (a.balance, a.pending_out()),
                    (Money::from_cents(60), Money::from_cents(40))
                );
            });
    }

    #[test]
    fn no_close_while_a_transfer_is_in_flight_and_a_refund_gives_it_back() {
        let mut events = opened(40);
        events.push(debited(40));
        AggregateTest::<Account>::given(events.clone())
            .when(AccountCommand::Close { reason: "x".into() })
            .then_expect_error(|e| matches!(e, AccountError::TransfersInFlight { count: 1 }));
        AggregateTest::<Account>::given(events.clone())
            .when(AccountCommand::RefundTransfer { transfer: T })
            .then_expect_events(vec![AccountEvent::TransferRefunded(TransferRefunded {
                transfer: T,
                amount: Money::from_cents(40),
            })]);
        events.push(AccountEvent::TransferSettled(TransferSettled { transfer: T }));
        AggregateTest::<Account>::given(events.clone())
            .when(AccountCommand::RefundTransfer { transfer: T })
            .then_expect_events(vec![AccountEvent::TransferVoided(TransferVoided { transfer: T })]);
        AggregateTest::<Account>::given(events)
            .when(AccountCommand::SettleTransfer { transfer: T })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_refund_before_the_debit_voids_it_and_a_late_debit_is_refused() {
        let mut events = opened(100);
        events.push(AccountEvent::TransferVoided(TransferVoided { transfer: T }));
        AggregateTest::<Account>::given(events.clone())
            .when(debit(10))
            .then_expect_error(|e| *e == AccountError::TransferCancelled(T));
        AggregateTest::<Account>::given(events)
            .when(AccountCommand::RefundTransfer { transfer: T })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_credit_needs_an_open_account() {
        let credit = AccountCommand::CreditFromTransfer {
            transfer: T,
            from: TO,
            amount: Money::from_cents(5),
        };
        AggregateTest::<Account>::given_no_events()
            .when(credit.clone())
            .then_expect_error(|e| *e == AccountError::NotFound);
        let mut closed = opened(0);
        closed.push(AccountEvent::AccountClosed(AccountClosed { reason: "x".into() }));
        AggregateTest::<Account>::given(closed)
            .when(credit)
            .then_expect_error(|e| *e == AccountError::Closed);
    }
}

proptest! {
    #[test]
    fn balance_is_never_negative_and_is_the_sum_of_events(cmds in proptest::collection::vec(command(), 0..60)) {
        let outcome = Properties::<Account>::new()
            .invariant("balance never negative", |a| {
                if a.balance.value().is_sign_negative() && !a.balance.is_zero() {
                    Err(format!("balance {}", a.balance))
                } else {
                    Ok(())
                }
            })
            .invariant("a closed account is empty", |a| {
                if a.status == AccountStatus::Closed && !a.balance.is_zero() {
                    Err("closed with money".into())
                } else {
                    Ok(())
                }
            })
            .invariant("two decimal places", |a| {
                if a.balance.value().scale() == SCALE { Ok(()) } else { Err("scale".into()) }
            })
            .check(&cmds)?;
        prop_assert_eq!(outcome.state.balance.value(), signed_sum(&outcome.events));
        // At most one AccountCreated, and nothing after AccountClosed.
        let opens = outcome.events.iter().filter(|e| matches!(e, AccountEvent::AccountCreated(_))).count();
        prop_assert!(opens <= 1);
        if let Some(i) = outcome.events.iter().position(|e| matches!(e, AccountEvent::AccountClosed(_))) {
            prop_assert_eq!(i + 1, outcome.events.len());
        }
    }
}
