//! sqlx adapters: the event store with its outbox (CockroachDB, or PostgreSQL standing in for
//! it) and the read model (PostgreSQL).
//!
//! Driver errors are mapped to port errors by SQLSTATE and error kind, never by message text.
//! Every statement runs under a `statement_timeout` and every pool acquire under a timeout, so
//! no call waits without bound. All SQL is static with bound parameters.

use std::str::FromStr;
use std::time::Duration;

use models::ledger::EncodedEvent;
use models::ledger::LedgerEvent;
use rust_decimal::Decimal;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::ports::ledger::{
    AppendBatch, Applied, BalanceView, EventStore, ReadError, ReadModel, RecordedEvent, StoreError, StoredOutcome,
};

/// Longest wait for a pooled connection.
pub const POOL_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest run of one statement (server side).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait to open one connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("bad database url: {0}")]
    Url(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

fn connect_options(url: &str) -> Result<PgConnectOptions, SetupError> {
    let options = PgConnectOptions::from_str(url).map_err(|e| SetupError::Url(e.to_string()))?;
    Ok(options.options([("statement_timeout", STATEMENT_TIMEOUT.as_millis().to_string())]))
}

/// A pool that connects lazily: a service starts while its database is down and answers 503.
///
/// # Errors
/// [`SetupError::Url`] when the url does not parse.
pub fn lazy_pool(url: &str, connections_max: u32) -> Result<PgPool, SetupError> {
    assert!(connections_max >= 1);
    Ok(PgPoolOptions::new()
        .max_connections(connections_max)
        .acquire_timeout(POOL_ACQUIRE_TIMEOUT)
        .connect_lazy_with(connect_options(url)?))
}

/// Creates the database named in `url` when it does not exist, connecting to the server's
/// `postgres` database to do so.
///
/// # Errors
/// [`SetupError`] when the server is unreachable or the name is not a plain identifier.
/// A pool's connections in use and its maximum (the `db_pool_connections_*` gauges).
pub fn pool_usage(pool: &PgPool) -> (u32, u32) {
    (pool.size().saturating_sub(pool.num_idle() as u32), pool.options().get_max_connections())
}

pub async fn ensure_database(url: &str) -> Result<(), SetupError> {
    let (name, mut conn) = admin_connection(url).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        let created = sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await;
        match created {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Created concurrently by another process: fine.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    conn.close().await?;
    Ok(())
}

/// The database named in `url`, checked to be a plain identifier, and a connection to the
/// server's `postgres` database. CREATE and DROP DATABASE take no bound parameters: the name is
/// checked and quoted, the one place SQL is built from a string.
async fn admin_connection(url: &str) -> Result<(String, PgConnection), SetupError> {
    let options = connect_options(url)?;
    let name = options.get_database().unwrap_or("postgres").to_string();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(SetupError::Url(format!("database name {name:?} must be letters, digits and '_'")));
    }
    let admin = options.clone().database("postgres");
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&admin))
        .await
        .map_err(|_| SetupError::Database(sqlx::Error::PoolTimedOut))??;
    Ok((name, conn))
}

/// Drops the database named in `url`, closing its connections (a real run's teardown).
///
/// # Errors
/// [`SetupError`] when the server is unreachable or the name is not a plain identifier.
pub async fn drop_database(url: &str) -> Result<(), SetupError> {
    let (name, mut conn) = admin_connection(url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// Runs the event store's migrations. The migrator's advisory lock is off: CockroachDB has
/// none, and the statements are idempotent (`IF NOT EXISTS`).
///
/// # Errors
/// [`SetupError`] when the database is unreachable or a migration fails.
pub async fn migrate_event_store(pool: &PgPool) -> Result<(), SetupError> {
    let mut migrator = sqlx::migrate!("./migrations/ledger");
    migrator.set_locking(false);
    migrator.run(pool).await?;
    Ok(())
}

/// Runs the read model's migrations (PostgreSQL, so the migrator's lock is kept).
///
/// # Errors
/// [`SetupError`] when the database is unreachable or a migration fails.
pub async fn migrate_read_model(pool: &PgPool) -> Result<(), SetupError> {
    sqlx::migrate!("./migrations/read").run(pool).await?;
    Ok(())
}

/// Where in a transaction an error happened: a lost connection at COMMIT is ambiguous.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Before,
    Commit,
}

fn store_error(error: sqlx::Error, phase: Phase, streams: &str) -> StoreError {
    let lost = |e: &dyn std::fmt::Display| match phase {
        Phase::Before => StoreError::Unavailable(e.to_string()),
        Phase::Commit => StoreError::Ambiguous(e.to_string()),
    };
    match &error {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("23505") if db.constraint() == Some("command_outcomes_pkey") => StoreError::Duplicate,
            Some("23505") => StoreError::Conflict { stream_id: streams.to_string() },
            Some("40001") => StoreError::Retryable(db.message().to_string()),
            Some("40003") => StoreError::Ambiguous(db.message().to_string()),
            // Connection exceptions, shutdown, too many connections, query canceled.
            Some(code) if code.starts_with("08") || code.starts_with("57") || code == "53300" => lost(db),
            _ if phase == Phase::Commit => StoreError::Ambiguous(db.message().to_string()),
            _ => StoreError::Unavailable(db.message().to_string()),
        },
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
            StoreError::Corrupt(error.to_string())
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => StoreError::Unavailable(error.to_string()),
        _ => lost(&error),
    }
}

fn read_error(error: sqlx::Error) -> ReadError {
    match &error {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
            ReadError::Corrupt(error.to_string())
        }
        _ => ReadError::Unavailable(error.to_string()),
    }
}

/// The events table's columns, as a literal: with `concat!` every query is a static string,
/// never one built at run time.
macro_rules! event_columns {
    () => {
        "event_id, stream_id, version, global_position, event_type, event_version, data, command_key"
    };
    ($t:literal) => {
        concat!(
            $t,
            ".event_id, ",
            $t,
            ".stream_id, ",
            $t,
            ".version, ",
            $t,
            ".global_position, ",
            $t,
            ".event_type, ",
            $t,
            ".event_version, ",
            $t,
            ".data, ",
            $t,
            ".command_key"
        )
    };
}

fn recorded(row: &PgRow) -> Result<RecordedEvent, sqlx::Error> {
    let version: i64 = row.try_get("version")?;
    let event_version: i32 = row.try_get("event_version")?;
    Ok(RecordedEvent {
        event_id: row.try_get("event_id")?,
        stream_id: row.try_get("stream_id")?,
        version: u64::try_from(version).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        global_position: row.try_get("global_position")?,
        encoded: EncodedEvent {
            event_type: row.try_get("event_type")?,
            event_version: u32::try_from(event_version).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            data: row.try_get("data")?,
        },
        command_key: row.try_get("command_key")?,
    })
}

/// The event store on CockroachDB or PostgreSQL. Appends run at SERIALIZABLE (CockroachDB's only
/// level), so 40001 is a normal, retryable answer.
#[derive(Debug, Clone)]
pub struct PgEventStore {
    pool: PgPool,
}

impl PgEventStore {
    pub fn new(pool: PgPool) -> Self {
        PgEventStore { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Events past `position`, and the age in seconds of the oldest of them (0 when none): the
    /// read model's lag behind its checkpoint. Uses the unique index on the global position.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database is down.
    pub async fn lag_after(&self, position: i64) -> Result<(u64, i64), StoreError> {
        let (count, age): (i64, i64) = sqlx::query_as(
            "SELECT count(*), CAST(COALESCE(EXTRACT(EPOCH FROM (now() - min(recorded_at))), 0) AS BIGINT) \
             FROM events WHERE global_position > $1",
        )
        .bind(position)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| store_error(e, Phase::Before, ""))?;
        Ok((count.max(0) as u64, age.max(0)))
    }

    /// Writes an event with a given type and version as a legacy writer would, with its outbox
    /// row (schema-evolution tests and fixtures).
    ///
    /// # Errors
    /// [`StoreError`] as for an append.
    pub async fn insert_legacy(
        &self,
        stream_id: &str,
        version: u64,
        encoded: &EncodedEvent,
        event_id: Uuid,
    ) -> Result<i64, StoreError> {
        let err = |e| store_error(e, Phase::Before, stream_id);
        let mut tx = self.pool.begin().await.map_err(err)?;
        let position: i64 = sqlx::query_scalar(
            "INSERT INTO events (event_id, stream_id, version, event_type, event_version, data) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING global_position",
        )
        .bind(event_id)
        .bind(stream_id)
        .bind(version as i64)
        .bind(&encoded.event_type)
        .bind(encoded.event_version as i32)
        .bind(&encoded.data)
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        sqlx::query("INSERT INTO outbox (event_id, global_position) VALUES ($1, $2)")
            .bind(event_id)
            .bind(position)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(|e| store_error(e, Phase::Commit, stream_id))?;
        Ok(position)
    }
}

impl EventStore for PgEventStore {
    async fn load_stream(&self, stream_id: &str, after_version: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version"
        ))
        .bind(stream_id)
        .bind(after_version as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| store_error(e, Phase::Before, stream_id))?;
        rows.iter().map(recorded).collect::<Result<_, _>>().map_err(|e| store_error(e, Phase::Before, stream_id))
    }

    async fn outcome(&self, key: &str) -> Result<Option<StoredOutcome>, StoreError> {
        let row = sqlx::query("SELECT request, response FROM command_outcomes WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| store_error(e, Phase::Before, ""))?;
        row.map(|row| -> Result<StoredOutcome, sqlx::Error> {
            Ok(StoredOutcome { request: row.try_get("request")?, response: row.try_get("response")? })
        })
        .transpose()
        .map_err(|e| store_error(e, Phase::Before, ""))
    }

    async fn append(&self, batch: AppendBatch) -> Result<Vec<i64>, StoreError> {
        assert!(!batch.events.is_empty(), "an append writes at least one event");
        let streams = batch.events.iter().map(|e| e.stream_id.as_str()).collect::<Vec<_>>().join(",");
        let before = |e| store_error(e, Phase::Before, &streams);
        // One round trip to begin at SERIALIZABLE, one per event (its outbox row in the same
        // statement, and with the last event the command's outcome), one to commit.
        let mut tx = self.pool.begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE").await.map_err(before)?;
        let mut positions = Vec::with_capacity(batch.events.len());
        let last = batch.events.len() - 1;
        for (i, event) in batch.events.iter().enumerate() {
            let outcome = batch.idempotency.as_ref().filter(|_| i == last);
            // With `check_versions` off ("expected version: any", only a planted bug does it)
            // the stream's next version is taken, whatever it is.
            let position: i64 = sqlx::query_scalar(
                "WITH e AS (INSERT INTO events (event_id, stream_id, version, event_type, event_version, data, \
                 command_key) VALUES ($1, $2, CASE WHEN $8 THEN $3 ELSE \
                 (SELECT COALESCE(MAX(version), 0) + 1 FROM events WHERE stream_id = $2) END, \
                 $4, $5, $6, $7) RETURNING event_id, global_position), \
                 o AS (INSERT INTO outbox (event_id, global_position) SELECT event_id, global_position FROM e \
                 WHERE $9 RETURNING 1), \
                 k AS (INSERT INTO command_outcomes (idempotency_key, request, response) \
                 SELECT $10::TEXT, $11::TEXT, $12::JSONB WHERE $10::TEXT IS NOT NULL RETURNING 1) \
                 SELECT global_position FROM e",
            )
            .bind(event.event_id)
            .bind(&event.stream_id)
            .bind(event.version as i64)
            .bind(&event.encoded.event_type)
            .bind(event.encoded.event_version as i32)
            .bind(&event.encoded.data)
            .bind(&event.command_key)
            .bind(batch.check_versions)
            .bind(batch.write_outbox)
            .bind(outcome.map(|(key, _)| key.as_str()))
            .bind(outcome.map(|(_, o)| o.request.as_str()))
            .bind(outcome.map(|(_, o)| &o.response))
            .fetch_one(&mut *tx)
            .await
            .map_err(before)?;
            positions.push(position);
        }
        tx.commit().await.map_err(|e| store_error(e, Phase::Commit, &streams))?;
        Ok(positions)
    }

    async fn read_all(&self, after: Option<(String, u64)>, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit = limit as i64;
        let rows = match after {
            None => {
                sqlx::query(concat!("SELECT ", event_columns!(), " FROM events ORDER BY stream_id, version LIMIT $1"))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
            Some((stream, version)) => {
                sqlx::query(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events WHERE (stream_id, version) > ($1, $2) ORDER BY stream_id, version LIMIT $3"
                ))
                .bind(stream)
                .bind(version as i64)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(|e| store_error(e, Phase::Before, ""))?;
        rows.iter().map(recorded).collect::<Result<_, _>>().map_err(|e| store_error(e, Phase::Before, ""))
    }

    async fn unsent(&self, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!("e"),
            " FROM outbox o JOIN events e ON e.event_id = o.event_id ORDER BY o.global_position LIMIT $1"
        ))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| store_error(e, Phase::Before, ""))?;
        rows.iter().map(recorded).collect::<Result<_, _>>().map_err(|e| store_error(e, Phase::Before, ""))
    }

    async fn mark_sent(&self, event_ids: &[Uuid]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM outbox WHERE event_id = ANY($1)")
            .bind(event_ids)
            .execute(&self.pool)
            .await
            .map_err(|e| store_error(e, Phase::Before, ""))?;
        Ok(())
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| store_error(e, Phase::Before, ""))?;
        Ok(count as u64)
    }
}

/// The read model on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgReadModel {
    pool: PgPool,
}

/// The projection's checkpoint: how far it got, for health and lag reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub events_applied: i64,
    pub last_global_position: i64,
    pub seconds_since_update: i64,
}

const PROJECTION: &str = "balances";

impl PgReadModel {
    pub fn new(pool: PgPool) -> Self {
        PgReadModel { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The checkpoint, if any event was ever applied.
    ///
    /// # Errors
    /// [`ReadError::Unavailable`] when the database is down.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, ReadError> {
        let row = sqlx::query(
            "SELECT events_applied, last_global_position, \
             CAST(EXTRACT(EPOCH FROM (now() - updated_at)) AS BIGINT) AS age \
             FROM projection_checkpoint WHERE projection = $1",
        )
        .bind(PROJECTION)
        .fetch_optional(&self.pool)
        .await
        .map_err(read_error)?;
        row.map(|r| -> Result<Checkpoint, sqlx::Error> {
            Ok(Checkpoint {
                events_applied: r.try_get("events_applied")?,
                last_global_position: r.try_get("last_global_position")?,
                seconds_since_update: r.try_get("age")?,
            })
        })
        .transpose()
        .map_err(read_error)
    }
}

/// Applies one event inside an open transaction: idempotent by (stream, version).
async fn apply_in(conn: &mut PgConnection, event: &RecordedEvent) -> Result<Applied, ReadError> {
    let have: Option<i64> = sqlx::query_scalar("SELECT version FROM account_balances WHERE account_id = $1 FOR UPDATE")
        .bind(&event.stream_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(read_error)?;
    let have = have.unwrap_or(0) as u64;
    if event.version <= have {
        return Ok(Applied::Duplicate);
    }
    if event.version != have + 1 {
        return Ok(Applied::Gap { have });
    }
    let decoded = LedgerEvent::decode(&event.encoded).map_err(|e| ReadError::Corrupt(e.to_string()))?;
    let delta = decoded.balance_delta();
    let balance_after: Decimal = match &decoded {
        LedgerEvent::AccountCreated(created) => {
            sqlx::query(
                "INSERT INTO account_balances (account_id, owner_name, currency, balance, version, global_position) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&event.stream_id)
            .bind(&created.owner_name)
            .bind(created.currency.code())
            .bind(created.initial_balance)
            .bind(event.version as i64)
            .bind(event.global_position)
            .execute(&mut *conn)
            .await
            .map_err(read_error)?;
            created.initial_balance
        }
        _ => sqlx::query_scalar(
            "UPDATE account_balances SET balance = balance + $2, version = $3, global_position = $4, updated_at = now() \
             WHERE account_id = $1 RETURNING balance",
        )
        .bind(&event.stream_id)
        .bind(delta)
        .bind(event.version as i64)
        .bind(event.global_position)
        .fetch_optional(&mut *conn)
        .await
        .map_err(read_error)?
        .ok_or_else(|| ReadError::Corrupt(format!("{} has events before AccountCreated", event.stream_id)))?,
    };
    sqlx::query(
        "INSERT INTO transactions (event_id, account_id, version, event_type, amount, balance_after, global_position) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event.event_id)
    .bind(&event.stream_id)
    .bind(event.version as i64)
    .bind(&event.encoded.event_type)
    .bind(delta)
    .bind(balance_after)
    .bind(event.global_position)
    .execute(&mut *conn)
    .await
    .map_err(read_error)?;
    sqlx::query(
        "INSERT INTO projection_checkpoint (projection, events_applied, last_global_position) VALUES ($1, 1, $2) \
         ON CONFLICT (projection) DO UPDATE SET events_applied = projection_checkpoint.events_applied + 1, \
         last_global_position = GREATEST(projection_checkpoint.last_global_position, EXCLUDED.last_global_position), \
         updated_at = now()",
    )
    .bind(PROJECTION)
    .bind(event.global_position)
    .execute(&mut *conn)
    .await
    .map_err(read_error)?;
    Ok(Applied::Applied)
}

fn balance_view(row: &PgRow) -> Result<BalanceView, ReadError> {
    let currency: String = row.try_get("currency").map_err(read_error)?;
    let version: i64 = row.try_get("version").map_err(read_error)?;
    Ok(BalanceView {
        account_id: row.try_get("account_id").map_err(read_error)?,
        owner_name: row.try_get("owner_name").map_err(read_error)?,
        currency: currency.parse().map_err(|e: models::MoneyError| ReadError::Corrupt(e.to_string()))?,
        balance: row.try_get("balance").map_err(read_error)?,
        version: version as u64,
        global_position: row.try_get("global_position").map_err(read_error)?,
    })
}

/// The read model's columns, as a literal for `concat!`.
macro_rules! balance_columns {
    () => {
        "account_id, owner_name, currency, balance, version, global_position"
    };
}

impl ReadModel for PgReadModel {
    async fn apply(&self, event: &RecordedEvent) -> Result<Applied, ReadError> {
        let mut tx = self.pool.begin().await.map_err(read_error)?;
        let applied = apply_in(&mut tx, event).await?;
        if applied == Applied::Applied {
            tx.commit().await.map_err(read_error)?;
        } else {
            tx.rollback().await.map_err(read_error)?;
        }
        Ok(applied)
    }

    async fn balance(&self, account_id: &str) -> Result<Option<BalanceView>, ReadError> {
        let row = sqlx::query(concat!("SELECT ", balance_columns!(), " FROM account_balances WHERE account_id = $1"))
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(read_error)?;
        row.as_ref().map(balance_view).transpose()
    }

    async fn all_balances(&self) -> Result<Vec<BalanceView>, ReadError> {
        let rows = sqlx::query(concat!("SELECT ", balance_columns!(), " FROM account_balances ORDER BY account_id"))
            .fetch_all(&self.pool)
            .await
            .map_err(read_error)?;
        rows.iter().map(balance_view).collect()
    }

    async fn rebuild<S: EventStore>(&self, source: &S) -> Result<u64, ReadError> {
        let mut tx = self.pool.begin().await.map_err(read_error)?;
        sqlx::query("TRUNCATE account_balances, transactions, projection_checkpoint")
            .execute(&mut *tx)
            .await
            .map_err(read_error)?;
        let mut replay = crate::ledger::mem::Replay::default();
        let mut count = 0u64;
        while let Some(page) = replay.next_page(source).await? {
            for event in &page {
                match apply_in(&mut tx, event).await? {
                    Applied::Applied => count += 1,
                    other => {
                        return Err(ReadError::Corrupt(format!(
                            "replay of {} v{} gave {other:?}: the event store has a gap",
                            event.stream_id, event.version
                        )));
                    }
                }
            }
        }
        tx.commit().await.map_err(read_error)?;
        tracing::info!(events = count, "read model rebuilt");
        Ok(count)
    }
}
