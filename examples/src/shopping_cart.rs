//! A shopping cart: add and remove items, check out once.

use std::collections::BTreeMap;

use es_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// The cart's state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cart {
    /// Quantity per SKU (never zero: emptied lines are removed).
    pub items: BTreeMap<String, u32>,
    /// Whether the cart was checked out (then it is frozen).
    pub checked_out: bool,
}

/// What happened to a cart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub enum CartEvent {
    /// Items were added.
    ItemAdded {
        /// The product.
        sku: String,
        /// How many.
        quantity: u32,
    },
    /// Items were removed.
    ItemRemoved {
        /// The product.
        sku: String,
        /// How many.
        quantity: u32,
    },
    /// The cart was checked out.
    CheckedOut,
}

/// What a customer asks of a cart.
#[derive(Debug, Clone)]
pub enum CartCommand {
    /// Add `quantity` of `sku`.
    Add {
        /// The product.
        sku: String,
        /// How many (at least 1).
        quantity: u32,
    },
    /// Remove `quantity` of `sku`.
    Remove {
        /// The product.
        sku: String,
        /// How many (at least 1, at most what is in the cart).
        quantity: u32,
    },
    /// Check out (the cart must not be empty).
    CheckOut,
}

/// Why a cart refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    /// Quantity zero.
    #[error("quantity must be at least 1")]
    ZeroQuantity,
    /// Removing more than is there.
    #[error("cart holds only {held} of {sku}")]
    NotEnough {
        /// The product.
        sku: String,
        /// How many are in the cart.
        held: u32,
    },
    /// Checking out an empty cart.
    #[error("cart is empty")]
    Empty,
    /// Changing a checked-out cart.
    #[error("cart is already checked out")]
    CheckedOut,
}

impl Cart {
    /// Total number of items.
    pub fn item_count(&self) -> u64 {
        self.items.values().map(|&q| u64::from(q)).sum()
    }
}

impl Aggregate for Cart {
    const TYPE: &'static str = "cart";
    type Command = CartCommand;
    type Event = CartEvent;
    type Error = CartError;

    fn handle(&self, command: &CartCommand) -> Result<Vec<CartEvent>, CartError> {
        if self.checked_out {
            return Err(CartError::CheckedOut);
        }
        match command {
            CartCommand::Add { quantity: 0, .. } | CartCommand::Remove { quantity: 0, .. } => {
                Err(CartError::ZeroQuantity)
            }
            CartCommand::Add { sku, quantity } => Ok(vec![CartEvent::ItemAdded {
                sku: sku.clone(),
                quantity: *quantity,
            }]),
            CartCommand::Remove { sku, quantity } => {
                let held = self.items.get(sku).copied().unwrap_or(0);
                if *quantity > held {
                    return Err(CartError::NotEnough { sku: sku.clone(), held });
                }
                Ok(vec![CartEvent::ItemRemoved {
                    sku: sku.clone(),
                    quantity: *quantity,
                }])
            }
            CartCommand::CheckOut if self.items.is_empty() => Err(CartError::Empty),
            CartCommand::CheckOut => Ok(vec![CartEvent::CheckedOut]),
        }
    }

    fn apply(&mut self, event: &CartEvent) {
        match event {
            CartEvent::ItemAdded { sku, quantity } => {
                *self.items.entry(sku.clone()).or_default() += quantity;
            }
            CartEvent::ItemRemoved { sku, quantity } => {
                if let Some(q) = self.items.get_mut(sku) {
                    *q = q.saturating_sub(*quantity);
                    if *q == 0 {
                        self.items.remove(sku);
                    }
                }
            }
            CartEvent::CheckedOut => self.checked_out = true,
        }
    }
}
