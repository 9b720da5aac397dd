//! The account read model in PostgreSQL (with `DATABASE_URL`): the table
//! `<schema>.accounts_v<N>`, read through the view `<schema>.accounts`.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use es_core::{BoxError, EventEnvelope, EventStore, ProjectionRunner, StoreError};
use es_postgres::{PageFailure, PgTypedProjector, PostgresEventStore};
use rust_decimal::Decimal;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::net::{net_moves, NetMove};
use super::row::{account_id, arrival, AccountRow};
use super::AccountQueries;
use super::AccountView;
use crate::domain::{Account, AccountEvent, AccountStatus, Money};

/// Version `version` of the accounts projection: writes
/// `<schema>.accounts_v<version>`, one row per account. A page of events
/// takes one statement for the accounts that only moved money in it
/// (their net amount added in place, see `add_net_moves`) and two more
/// for any other account (read the rows it touches, fold, upsert).
pub struct AccountsTable {
    name: String,
    table: String,
    index: String,
}

impl AccountsTable {
    /// The projection `name` (its checkpoint key) writing `table`
    /// (schema-qualified).
    pub fn new(name: String, table: String) -> Self {
        let index = format!("{}_owner_idx", table.rsplit('.').next().unwrap_or("accounts"));
        Self { name, table, index }
    }
}

/// Above this balance the fold's additions could saturate: an account
/// that gets near it is folded row by row instead.
const NET_MOVE_CEILING: &str = "1e25";

impl AccountsTable {
    /// Adds each account's net amount to its row where the row is at the
    /// version the account's first event in the page follows and the
    /// running sum keeps the balance between zero and [`NET_MOVE_CEILING`]
    /// (there the fold takes the same steps); returns the accounts it
    /// changed. A row at any other version (a replay over rows already
    /// past it, a read model built from part of the log), or missing, is
    /// left to the fold.
    async fn add_net_moves(&self, tx: &mut PgConnection, moves: &[NetMove]) -> Result<HashSet<Uuid>, sqlx::Error> {
        if moves.is_empty() {
            return Ok(HashSet::new());
        }
        let n = moves.len();
        let (mut ids, mut froms, mut tos) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut nets, mut lows, mut highs) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        for m in moves {
            ids.push(m.id);
            froms.push(i64::try_from(m.from_version).unwrap_or(i64::MAX));
            tos.push(i64::try_from(m.to_version).unwrap_or(i64::MAX));
            nets.push(m.net.to_string());
            lows.push(m.low.to_string());
            highs.push(m.high.to_string());
        }
        // `t.id = ANY($1)` keeps the scan of the table to the page's rows
        // (joined on the unnested arrays alone, the planner scans the
        // whole primary key once per page).
        let changed: Vec<Uuid> = sqlx::query_scalar(&format!(
            "UPDATE {t} AS t SET balance = t.balance + m.net, version = m.to_version, updated_at = now() \
             FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::text[]::numeric[], $5::text[]::numeric[], \
               $6::text[]::numeric[]) AS m(id, from_version, to_version, net, low, high) \
             WHERE t.id = ANY($1) AND t.id = m.id AND t.version = m.from_version AND t.balance + m.low >= 0 \
               AND t.balance + m.high <= {NET_MOVE_CEILING} \
             RETURNING t.id",
            t = self.table
        ))
        .bind(&ids)
        .bind(&froms)
        .bind(&tos)
        .bind(&nets)
        .bind(&lows)
        .bind(&highs)
        .fetch_all(tx)
        .await?;
        Ok(changed.into_iter().collect())
    }
}

fn status_text(s: AccountStatus) -> &'static str {
    match s {
        AccountStatus::NotOpened => "not_opened",
        AccountStatus::Open => "open",
        AccountStatus::Closed => "closed",
    }
}

fn status_of(text: &str) -> AccountStatus {
    match text {
        "open" => AccountStatus::Open,
        "closed" => AccountStatus::Closed,
        _ => AccountStatus::NotOpened,
    }
}

const COLUMNS: &str = "id, owner_id, owner_name, balance::text, status, version, in_flight::text";

/// [`COLUMNS`] of a version 1 table, which has no `in_flight` (nothing was
/// in flight before transfers): read while version 1 still serves readers,
/// during the rebuild of an upgrade.
const V1_COLUMNS: &str = "id, owner_id, owner_name, balance::text, status, version, '0'::text AS in_flight";

/// Runs `read` with [`COLUMNS`], and again with [`V1_COLUMNS`] when the
/// serving table lacks one of them (SQLSTATE 42703, undefined column).
async fn with_columns<T, F, Fut>(read: F) -> Result<T, sqlx::Error>
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    match read(COLUMNS).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42703") => read(V1_COLUMNS).await,
        other => other,
    }
}

fn row_of(r: &sqlx::postgres::PgRow) -> Result<AccountRow, StoreError> {
    let d = |e: sqlx::Error| StoreError::backend("decode account row", e);
    let balance: String = r.try_get(3).map_err(d)?;
    let balance = Money::from_str(&balance).map_err(|e| StoreError::backend("decode account balance", e))?;
    let in_flight: String = r.try_get(6).map_err(d)?;
    let in_flight = Decimal::from_str(&in_flight).map_err(|e| StoreError::backend("decode account in_flight", e))?;
    let mut row = AccountRow {
        id: r.try_get(0).map_err(d)?,
        account: Account {
            owner_id: r.try_get(1).map_err(d)?,
            owner_name: r.try_get(2).map_err(d)?,
            balance,
            status: status_of(r.try_get::<&str, _>(4).map_err(d)?),
            ..Account::default()
        },
        version: r.try_get::<i64, _>(5).map_err(d)?.max(0) as u64,
        ..AccountRow::empty(Uuid::nil())
    };
    row.set_net_in_flight(in_flight);
    Ok(row)
}

#[async_trait]
impl PgTypedProjector for AccountsTable {
    type Aggregate = Account;

    fn name(&self) -> &str {
        &self.name
    }

    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {} (id UUID PRIMARY KEY, owner_id UUID, owner_name TEXT NOT NULL, \
             balance NUMERIC NOT NULL, status TEXT NOT NULL, version BIGINT NOT NULL, \
             updated_at TIMESTAMPTZ NOT NULL DEFAULT now(), in_flight NUMERIC NOT NULL DEFAULT 0)",
            self.table
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "CREATE INDEX IF NOT EXISTS {} ON {} (owner_id, id)",
            self.index, self.table
        ))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn apply(&self, tx: &mut PgConnection, event: &EventEnvelope<AccountEvent>) -> Result<(), BoxError> {
        self.apply_page(tx, std::slice::from_ref(event))
            .await
            .map_err(|f| f.error)
    }

    async fn apply_page(
        &self,
        tx: &mut PgConnection,
        events: &[EventEnvelope<AccountEvent>],
    ) -> Result<(), PageFailure> {
        // Look the page's accounts up by primary key whatever the planner's
        // statistics say: during a rebuild the table was just truncated and
        // has none, and a sequential scan per page grows with the table
        // (measured: 50 s instead of 6 s for 1,000,000 events).
        sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await?;
        let moved = self.add_net_moves(tx, &net_moves(events)).await?;
        let folded = |id: &Uuid| !moved.contains(id);
        let mut ids: Vec<Uuid> = events
            .iter()
            .filter_map(account_id)
            .chain(events.iter().filter_map(|e| arrival(e).map(|(from, _)| from)))
            .filter(folded)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        let existing = sqlx::query(&format!("SELECT {COLUMNS} FROM {} WHERE id = ANY($1)", self.table))
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        let mut rows: HashMap<Uuid, AccountRow> = HashMap::with_capacity(ids.len());
        for r in &existing {
            let row = row_of(r).map_err(PageFailure::whole)?;
            rows.insert(row.id, row);
        }
        let mut changed: Vec<Uuid> = Vec::with_capacity(ids.len());
        for e in events {
            let Some(id) = account_id(e).filter(folded) else {
                continue;
            };
            let row = rows.entry(id).or_insert_with(|| AccountRow::empty(id));
            if row.apply(e) {
                changed.push(id);
                if let Some((from, amount)) = arrival(e) {
                    rows.entry(from).or_insert_with(|| AccountRow::empty(from)).land(amount);
                    changed.push(from);
                }
            }
        }
        changed.sort_unstable();
        changed.dedup();
        let n = changed.len();
        let mut in_flights = Vec::with_capacity(n);
        let (mut owners, mut names, mut balances, mut statuses, mut versions) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for id in &changed {
            let row = &rows[id];
            owners.push(row.account.owner_id);
            names.push(row.account.owner_name.as_str());
            balances.push(row.account.balance.to_string());
            statuses.push(status_text(row.account.status));
            versions.push(row.version as i64);
            in_flights.push(row.net_in_flight().to_string());
        }
        sqlx::query(&format!(
            "INSERT INTO {} (id, owner_id, owner_name, balance, status, version, updated_at, in_flight) \
             SELECT id, owner_id, owner_name, balance, status, version, now(), in_flight \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[]::numeric[], $5::text[], $6::bigint[], \
               $7::text[]::numeric[]) AS u(id, owner_id, owner_name, balance, status, version, in_flight) \
             ON CONFLICT (id) DO UPDATE SET owner_id = EXCLUDED.owner_id, owner_name = EXCLUDED.owner_name, \
               balance = EXCLUDED.balance, status = EXCLUDED.status, version = EXCLUDED.version, updated_at = now(), \
               in_flight = EXCLUDED.in_flight",
            self.table
        ))
        .bind(&changed)
        .bind(&owners)
        .bind(&names)
        .bind(&balances)
        .bind(&statuses)
        .bind(&versions)
        .bind(&in_flights)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!("TRUNCATE {}", self.table)).execute(tx).await?;
        Ok(())
    }
}

/// Reads accounts through the reader view `<schema>.accounts` (the active
/// version's table), with the primary key or the `(owner_id, id)` index.
///
/// With [`own_version`](Self::own_version), a list is read from this
/// process's own version's table instead whenever that version is not the
/// one readers are switched to but its runner has passed every committed
/// event: while a new version is built beside the serving one (which no
/// upgraded process keeps current any more), and on an old process while a
/// newer version serves. A list then shows every command answered before
/// it, as the runner it waited for does; a version still behind is never
/// read (the view's complete, older rows are).
#[derive(Debug, Clone)]
pub struct PgAccounts {
    store: PostgresEventStore,
    view: String,
    own: Option<OwnVersion>,
}

/// This process's version of the projection, see [`PgAccounts::own_version`].
#[derive(Debug, Clone)]
struct OwnVersion {
    table: String,
    runner: ProjectionRunner,
    serving: Arc<AtomicBool>,
}

impl PgAccounts {
    /// Reads `view` (schema-qualified) in `store`'s database.
    pub fn new(store: &PostgresEventStore, view: String) -> Self {
        Self {
            store: store.clone(),
            view,
            own: None,
        }
    }

    /// This process keeps `table` (schema-qualified) current with `runner`;
    /// `serving` is whether readers are switched to it (then the view is
    /// that table).
    #[must_use]
    pub fn own_version(mut self, table: String, runner: ProjectionRunner, serving: Arc<AtomicBool>) -> Self {
        self.own = Some(OwnVersion { table, runner, serving });
        self
    }

    /// Where a list is read from: the view, or this process's own table
    /// when readers are not switched to it and it is caught up.
    async fn list_source(&self) -> &str {
        let Some(own) = &self.own else {
            return &self.view;
        };
        if own.serving.load(Ordering::Acquire) {
            return &self.view;
        }
        match self.store.committed_position().await {
            Ok(committed) if own.runner.known_position() >= committed => &own.table,
            _ => &self.view,
        }
    }
}

#[async_trait]
impl AccountQueries for PgAccounts {
    async fn get(&self, id: Uuid) -> Result<Option<AccountView>, StoreError> {
        let row = with_columns(|columns| {
            let sql = format!("SELECT {columns} FROM {} WHERE id = $1", self.view);
            async move { sqlx::query(&sql).bind(id).fetch_optional(self.store.pool()).await }
        })
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
        let (filter, count) = match owner {
            Some(_) => ("WHERE owner_id = $3", "WHERE owner_id = $1"),
            None => ("", ""),
        };
        let db = |e| StoreError::backend("list accounts", e);
        let source = self.list_source().await;
        let rows = with_columns(|columns| {
            let sql = format!("SELECT {columns} FROM {source} {filter} ORDER BY id LIMIT $1 OFFSET $2");
            async move {
                let mut page = sqlx::query(&sql)
                    .bind(limit.min(i64::MAX as usize) as i64)
                    .bind(offset.min(i64::MAX as usize) as i64);
                if let Some(o) = owner {
                    page = page.bind(o);
                }
                page.fetch_all(self.store.pool()).await
            }
        })
        .await
        .map_err(db)?;
        let count_sql = format!("SELECT count(*) FROM {source} {count}");
        let mut total = sqlx::query_scalar::<_, i64>(&count_sql);
        if let Some(o) = owner {
            total = total.bind(o);
        }
        let total = total.fetch_one(self.store.pool()).await.map_err(db)?;
        let mut views = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(v) = row_of(r)?.view() {
                views.push(v);
            }
        }
        Ok((views, total.max(0) as usize))
    }
}
