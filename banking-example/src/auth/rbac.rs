//! Roles and what they may do with accounts.
//!
//! | role | open | read | deposit | withdraw | close | list accounts | list users, set roles |
//! | --- | --- | --- | --- | --- | --- | --- | --- |
//! | `customer` | own | own | own | own | own | own | no |
//! | `teller` | own | any | any | own | own | all | no |
//! | `admin` | own | any | any | any | any | all | yes (not their own roles) |
//!
//! An account the caller may not read answers 404 (ids cannot be
//! probed); one they may read but not change answers 403.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A role of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Default: acts on their own accounts only.
    Customer,
    /// Reads any account and deposits to any account.
    Teller,
    /// Everything, including closing any account and listing users.
    Admin,
}

impl Role {
    /// The role's name as stored and serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Teller => "teller",
            Self::Admin => "admin",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "customer" => Some(Self::Customer),
            "teller" => Some(Self::Teller),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Something done to an existing account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountAction {
    /// Read the account or its events.
    Read,
    /// Pay in.
    Deposit,
    /// Take out.
    Withdraw,
    /// Close.
    Close,
}

/// Whether `roles` may see an account (`is_owner`: the caller owns it).
pub fn can_read(roles: &[Role], is_owner: bool) -> bool {
    is_owner || roles.iter().any(|r| matches!(r, Role::Teller | Role::Admin))
}

/// Whether `roles` may do `action` on an account.
pub fn may(roles: &[Role], action: AccountAction, is_owner: bool) -> bool {
    if is_owner || roles.contains(&Role::Admin) {
        return true;
    }
    roles.contains(&Role::Teller) && matches!(action, AccountAction::Read | AccountAction::Deposit)
}

/// Whether `roles` see every account in `GET /accounts`.
pub fn sees_all_accounts(roles: &[Role]) -> bool {
    can_read(roles, false)
}

/// Whether `roles` may list users.
pub fn may_list_users(roles: &[Role]) -> bool {
    roles.contains(&Role::Admin)
}

/// Whether `roles` may set other users' roles.
pub fn may_set_roles(roles: &[Role]) -> bool {
    roles.contains(&Role::Admin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccountAction::*;

    #[test]
    fn matrix() {
        let c = [Role::Customer];
        let t = [Role::Teller];
        let a = [Role::Admin];
        for action in [Read, Deposit, Withdraw, Close] {
            assert!(may(&c, action, true));
            assert!(!may(&c, action, false));
            assert!(may(&a, action, false));
        }
        assert!(may(&t, Read, false) && may(&t, Deposit, false));
        assert!(!may(&t, Withdraw, false) && !may(&t, Close, false));
        assert!(!can_read(&c, false) && can_read(&t, false));
        assert!(may_list_users(&a) && !may_list_users(&t));
        assert!(may_set_roles(&a) && !may_set_roles(&t) && !may_set_roles(&c));
        assert_eq!(Role::parse(Role::Teller.as_str()), Some(Role::Teller));
    }
}
