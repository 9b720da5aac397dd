//! The account read model in the embedded SQLite database (the server's
//! default store): the table `accounts`, in the same file as the events.

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;
use es_core::{BoxError, EventEnvelope, StoreError};
use es_sqlite::{PageFailure, SqliteEventStore, SqliteTypedProjector};
use rust_decimal::Decimal;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use super::row::{account_id, arrival, AccountRow};
use super::AccountQueries;
use super::AccountView;
use crate::domain::{Account, AccountEvent, AccountStatus, Money};

/// Name (checkpoint key) and table of the SQLite accounts projection.
pub const SQLITE_ACCOUNTS: &str = "accounts";

const COLUMNS: &str = "id, owner_id, owner_name, balance, status, version, in_flight";

fn status_text(s: AccountStatus) -> &'static str {
    match s {
        AccountStatus::NotOpened => "not_opened",
        AccountStatus::Open => "open",
        AccountStatus::Closed => "closed",
    }
}

fn row_of(r: &sqlx::sqlite::SqliteRow) -> Result<AccountRow, StoreError> {
    let d = |e: sqlx::Error| StoreError::backend("decode account row", e);
    let uuid = |text: String| Uuid::parse_str(&text).map_err(|e| StoreError::backend("decode account id", e));
    let owner: Option<String> = r.try_get(1).map_err(d)?;
    let balance: String = r.try_get(3).map_err(d)?;
    let status: String = r.try_get(4).map_err(d)?;
    let in_flight: String = r.try_get(6).map_err(d)?;
    let in_flight = Decimal::from_str(&in_flight).map_err(|e| StoreError::backend("decode account in_flight", e))?;
    let mut row = AccountRow {
        id: uuid(r.try_get(0).map_err(d)?)?,
        account: Account {
            owner_id: owner.map(uuid).transpose()?,
            owner_name: r.try_get(2).map_err(d)?,
            balance: Money::from_str(&balance).map_err(|e| StoreError::backend("decode account balance", e))?,
            status: match status.as_str() {
                "open" => AccountStatus::Open,
                "closed" => AccountStatus::Closed,
                _ => AccountStatus::NotOpened,
            },
            ..Account::default()
        },
        version: r.try_get::<i64, _>(5).map_err(d)?.max(0) as u64,
        ..AccountRow::empty(Uuid::nil())
    };
    row.set_net_in_flight(in_flight);
    Ok(row)
}

/// The accounts projection on SQLite: one row per account; a page is
/// folded in memory and written with one upsert per account it changed, in
/// the unit's transaction.
#[derive(Debug, Default)]
pub struct SqliteAccountsTable;

#[async_trait]
impl SqliteTypedProjector for SqliteAccountsTable {
    type Aggregate = Account;

    fn name(&self) -> &str {
        SQLITE_ACCOUNTS
    }

    async fn setup(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, owner_id TEXT, owner_name TEXT NOT NULL, \
             balance TEXT NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL, updated_at TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("CREATE INDEX IF NOT EXISTS accounts_owner_idx ON accounts (owner_id, id)")
            .execute(&mut *tx)
            .await?;
        // Files from before transfers: no transfer events exist in them,
        // so every account's money in flight is zero.
        let has_in_flight: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pragma_table_info('accounts') WHERE name = 'in_flight'")
                .fetch_one(&mut *tx)
                .await?;
        if has_in_flight == 0 {
            sqlx::query("ALTER TABLE accounts ADD COLUMN in_flight TEXT NOT NULL DEFAULT '0.00'")
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    async fn apply(&self, tx: &mut SqliteConnection, event: &EventEnvelope<AccountEvent>) -> Result<(), BoxError> {
        self.apply_page(tx, std::slice::from_ref(event))
            .await
            .map_err(|f| f.error)
    }

    async fn apply_page(
        &self,
        tx: &mut SqliteConnection,
        events: &[EventEnvelope<AccountEvent>],
    ) -> Result<(), PageFailure> {
        let mut rows: HashMap<Uuid, AccountRow> = HashMap::new();
        let mut changed: Vec<Uuid> = Vec::new();
        for e in events {
            let Some(id) = account_id(e) else { continue };
            if load(tx, &mut rows, id).await?.apply(e) {
                changed.push(id);
                if let Some((from, amount)) = arrival(e) {
                    load(tx, &mut rows, from).await?.land(amount);
                    changed.push(from);
                }
            }
        }
        changed.sort_unstable();
        changed.dedup();
        let now = chrono::Utc::now().to_rfc3339();
        for id in changed {
            let row = &rows[&id];
            sqlx::query(
                "INSERT INTO accounts (id, owner_id, owner_name, balance, status, version, updated_at, in_flight) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id, \
                 owner_name = excluded.owner_name, balance = excluded.balance, status = excluded.status, \
                 version = excluded.version, updated_at = excluded.updated_at, in_flight = excluded.in_flight",
            )
            .bind(id.to_string())
            .bind(row.account.owner_id.map(|o| o.to_string()))
            .bind(&row.account.owner_name)
            .bind(row.account.balance.to_string())
            .bind(status_text(row.account.status))
            .bind(row.version as i64)
            .bind(&now)
            .bind(row.net_in_flight().to_string())
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    async fn reset(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM accounts").execute(tx).await?;
        Ok(())
    }
}

/// The row of account `id`: from `rows`, else from the table, else empty.
async fn load<'r>(
    tx: &mut SqliteConnection,
    rows: &'r mut HashMap<Uuid, AccountRow>,
    id: Uuid,
) -> Result<&'r mut AccountRow, PageFailure> {
    if let std::collections::hash_map::Entry::Vacant(slot) = rows.entry(id) {
        let found = sqlx::query(&format!("SELECT {COLUMNS} FROM accounts WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        slot.insert(match found {
            Some(r) => row_of(&r).map_err(PageFailure::whole)?,
            None => AccountRow::empty(id),
        });
    }
    rows.get_mut(&id)
        .ok_or_else(|| PageFailure::whole(StoreError::backend("account row", "vanished")))
}

/// Reads the `accounts` table: by primary key, or through the
/// `(owner_id, id)` index for one owner's accounts. UUIDv7 ids sort as
/// text in creation order, as in PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqliteAccounts {
    store: SqliteEventStore,
}

impl SqliteAccounts {
    /// Reads `store`'s database.
    pub fn new(store: &SqliteEventStore) -> Self {
        Self { store: store.clone() }
    }
}

#[async_trait]
impl AccountQueries for SqliteAccounts {
    async fn get(&self, id: Uuid) -> Result<Option<AccountView>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM accounts WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(self.store.pool())
            .await
            .map_err(|e| StoreError::backend("read account", e))?;
        Ok(row.map(|r| row_of(&r)).transpose()?.and_then(|r| r.view()))
    }

    async fn list(
        &self,
        owner: Option<Uuid>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<AccountView>, usize), StoreError> {
        let db = |e| StoreError::backend("list accounts", e);
        let (filter, owner) = match owner {
            Some(o) => ("WHERE owner_id = ?", Some(o.to_string())),
            None => ("", None),
        };
        let sql = format!("SELECT {COLUMNS} FROM accounts {filter} ORDER BY id LIMIT ? OFFSET ?");
        let mut page = sqlx::query(&sql);
        if let Some(o) = &owner {
            page = page.bind(o);
        }
        let rows = page
            .bind(limit.min(i64::MAX as usize) as i64)
            .bind(offset.min(i64::MAX as usize) as i64)
            .fetch_all(self.store.pool())
            .await
            .map_err(db)?;
        let count_sql = format!("SELECT count(*) FROM accounts {filter}");
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
        if let Some(o) = &owner {
            count = count.bind(o);
        }
        let total = count.fetch_one(self.store.pool()).await.map_err(db)?;
        let mut views = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(v) = row_of(r)?.view() {
                views.push(v);
            }
        }
        Ok((views, total.max(0) as usize))
    }
}
