//! [`RedisBackend`]: lazily connected Redis connections behind a circuit
//! breaker, a load shedder, a timeout and retries.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use es_core::{Clock, SystemClock};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::Instrument;

use crate::circuit::{CircuitBreaker, CircuitState, LoadShedder};
use crate::config::{RedisConfig, ResilienceConfig};
use crate::error::RedisError;
use crate::telemetry;

/// Whether a call may safely be sent again after a failure whose effect is
/// unknown (a timeout, a dropped connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Repeating the call has the same effect as sending it once: retried
    /// by the configured policy.
    Idempotent,
    /// Sent at most once.
    Once,
}

/// One slot of the pool: a connection once established (with the number
/// of the connection it is, to tell it from its successors), and a lock so
/// that only one task connects it at a time.
struct Slot {
    conn: Mutex<Option<(u64, ConnectionManager)>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    fn current(&self) -> Option<(u64, ConnectionManager)> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Forgets connection `generation` if the slot still holds it, so that
    /// the next call connects afresh.
    fn discard(&self, generation: u64) {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if conn.as_ref().is_some_and(|(g, _)| *g == generation) {
            *conn = None;
        }
    }
}

/// The gateway every Redis call of this crate goes through.
///
/// Guarantees:
/// - Construction does no I/O: connections are made on first use, so an
///   application starts (and serves from its store) while Redis is down.
/// - A call is refused without I/O when the circuit is open or when
///   `max_in_flight` calls are already running (shed); refusals are cheap
///   and callers treat them like any other failure (the cache as a miss).
/// - Every call is bounded by `response_timeout`; idempotent calls are
///   retried with jittered exponential backoff, never past an open circuit.
/// - Each call runs in a `es.redis.call` tracing span and records latency,
///   errors and shedding as metrics (see [`telemetry`](crate::telemetry)).
///
/// Share one backend (in an `Arc`) between components to share its
/// connections and breaker, or give each its own for isolation (a burst of
/// cache traffic then cannot shed lock or de-duplication calls).
pub struct RedisBackend {
    name: &'static str,
    client: redis::Client,
    redis: RedisConfig,
    resilience: ResilienceConfig,
    slots: Vec<Slot>,
    next: AtomicUsize,
    generations: AtomicU64,
    breaker: CircuitBreaker,
    shedder: LoadShedder,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("name", &self.name)
            .field("pool_size", &self.slots.len())
            .field("circuit", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

/// Reports an allowed call as cancelled if it is dropped before a verdict.
struct Pending<'a> {
    breaker: &'a CircuitBreaker,
    settled: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.cancelled();
        }
    }
}

fn is_transport(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

impl RedisBackend {
    /// A backend for `redis.url`; `name` labels its metrics and logs.
    /// Fails only when the URL does not parse; no connection is made yet.
    pub fn new(name: &'static str, redis: &RedisConfig, resilience: &ResilienceConfig) -> Result<Self, RedisError> {
        Self::with_clock(name, redis, resilience, Arc::new(SystemClock))
    }

    /// Like [`new`](Self::new), with the circuit breaker's cool-down
    /// (`open_for`) measured on `clock` (see
    /// [`CircuitBreaker::with_clock`]), e.g. an
    /// [`es_core::ManualClock`] in tests.
    pub fn with_clock(
        name: &'static str,
        redis: &RedisConfig,
        resilience: &ResilienceConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RedisError> {
        let client = redis::Client::open(redis.url.as_str()).map_err(|source| RedisError::Redis {
            operation: "open",
            source,
        })?;
        let slots = (0..redis.pool_size.max(1))
            .map(|_| Slot {
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
            })
            .collect();
        Ok(Self {
            name,
            client,
            redis: redis.clone(),
            resilience: *resilience,
            slots,
            next: AtomicUsize::new(0),
            generations: AtomicU64::new(0),
            breaker: CircuitBreaker::with_clock(name, resilience.failure_threshold, resilience.open_for, clock),
            shedder: LoadShedder::new(resilience.max_in_flight),
        })
    }

    /// The circuit breaker's current state.
    pub fn circuit_state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// Runs `call` on a pooled connection under the breaker, the shedder,
    /// the timeout and (for [`Idempotency::Idempotent`]) the retry policy.
    pub async fn run<T, F, Fut>(&self, op: &'static str, idempotency: Idempotency, call: F) -> Result<T, RedisError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let span = tracing::debug_span!("es.redis.call", backend = self.name, op);
        self.run_inner(op, idempotency, call).instrument(span).await
    }

    async fn run_inner<T, F, Fut>(&self, op: &'static str, idempotency: Idempotency, call: F) -> Result<T, RedisError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(_permit) = self.shedder.try_enter() else {
            metrics::counter!(telemetry::SHED, "op" => op).increment(1);
            return Err(self.count(RedisError::Shed {
                operation: op,
                max_in_flight: self.shedder.max_in_flight(),
            }));
        };
        let attempts = match idempotency {
            Idempotency::Idempotent => self.resilience.retry_attempts.max(1),
            Idempotency::Once => 1,
        };
        let mut attempt = 1;
        loop {
            if !self.breaker.allow() {
                return Err(self.count(RedisError::CircuitOpen { operation: op }));
            }
            let mut pending = Pending {
                breaker: &self.breaker,
                settled: false,
            };
            let started = Instant::now();
            let result = self.attempt(op, &call).await;
            metrics::histogram!(telemetry::OP_DURATION, "op" => op).record(started.elapsed().as_secs_f64());
            pending.settled = true;
            match result {
                Ok(v) => {
                    self.breaker.success();
                    return Ok(v);
                }
                Err((e, transport)) => {
                    if transport {
                        self.breaker.failure();
                    } else {
                        // Redis answered: the connection is healthy.
                        self.breaker.success();
                    }
                    if !transport || attempt >= attempts {
                        tracing::debug!(op, attempt, error = %e, "redis call failed");
                        return Err(self.count(e));
                    }
                    tracing::debug!(op, attempt, error = %e, "redis call failed; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt: connection (made if needed) plus call, under the
    /// timeout. The flag says whether the failure is a transport failure.
    ///
    /// A connection that failed with a transport error is dropped from its
    /// slot: the next call on the slot connects afresh. (A connection
    /// manager whose own reconnection failed keeps answering with that
    /// failure until a call kicks off another attempt, so after an outage
    /// each slot would fail one more call, and every such failure reopens
    /// the circuit for `open_for`.)
    async fn attempt<T, F, Fut>(&self, op: &'static str, call: &F) -> Result<T, (RedisError, bool)>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let timeout = self.redis.response_timeout;
        let used = Mutex::new(None);
        let work = async {
            let (slot, generation, conn) = self.connection().await?;
            *used.lock().unwrap_or_else(PoisonError::into_inner) = Some((slot, generation));
            call(conn).await
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => {
                let transport = is_transport(&source);
                if transport && !source.is_timeout() {
                    if let Some((slot, generation)) = *used.lock().unwrap_or_else(PoisonError::into_inner) {
                        self.slots[slot].discard(generation);
                    }
                }
                Err((RedisError::Redis { operation: op, source }, transport))
            }
            Err(_) => Err((
                RedisError::Timeout {
                    operation: op,
                    timeout_ms: timeout.as_millis(),
                },
                true,
            )),
        }
    }

    /// A pooled connection, established on first use (one task connects a
    /// slot; others wait for it): its slot, its generation and itself.
    async fn connection(&self) -> redis::RedisResult<(usize, u64, ConnectionManager)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = &self.slots[i];
        if let Some((generation, c)) = slot.current() {
            return Ok((i, generation, c));
        }
        let _connecting = slot.connecting.lock().await;
        if let Some((generation, c)) = slot.current() {
            return Ok((i, generation, c));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.redis.connect_timeout)
            .set_response_timeout(self.redis.response_timeout)
            .set_number_of_retries(1)
            .set_max_delay(100);
        let conn = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        tracing::debug!(backend = self.name, slot = i, "redis connection established");
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        *slot.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some((generation, conn.clone()));
        Ok((i, generation, conn))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .resilience
            .retry_base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let capped = exp.min(self.resilience.retry_max_delay);
        capped.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    #[allow(
        clippy::unused_self,
        reason = "counted per backend instance if labels ever need it; callers read as self.count(e)"
    )]
    fn count(&self, e: RedisError) -> RedisError {
        let op = match &e {
            RedisError::CircuitOpen { operation }
            | RedisError::Shed { operation, .. }
            | RedisError::Timeout { operation, .. }
            | RedisError::Redis { operation, .. }
            | RedisError::Protocol { operation, .. } => *operation,
            RedisError::Codec { .. } => "codec",
        };
        metrics::counter!(telemetry::ERRORS, "op" => op, "kind" => e.kind()).increment(1);
        e
    }
}

/// Shared handle to a backend.
pub type SharedBackend = Arc<RedisBackend>;
