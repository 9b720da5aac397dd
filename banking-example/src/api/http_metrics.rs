//! `http_requests_total{method,route,status}` and
//! `http_request_duration_seconds{method,route}` with their handles kept:
//! a request looks its series up by method and route template instead of
//! building label strings and registering them with the recorder.
//!
//! Every label has a bounded set of values: the method is one of the
//! standard ones or `other`, the route a template of the route table or
//! `unmatched`, the status a status code. The recorder drops a series idle
//! for [`METRICS_IDLE_TIMEOUT`](crate::app::METRICS_IDLE_TIMEOUT); a kept
//! handle is registered again when it is older than [`REFRESH`], so a
//! series that was dropped comes back on its next update, as it does
//! without kept handles.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::http::Method;
use metrics::{Counter, Histogram};

/// How long a kept handle is used before it is registered again (far
/// below the recorder's idle timeout of an hour).
pub(crate) const REFRESH: Duration = Duration::from_secs(60);

/// The `method` label: one of the methods of RFC 9110 and PATCH, or
/// `other` (any token is a valid method, and each would be a new series).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// The series of one method and route.
struct RouteSeries {
    method: &'static str,
    route: Arc<str>,
    duration: Kept<Histogram>,
    /// `http_requests_total` by status code.
    requests: RwLock<HashMap<u16, Kept<Counter>, FastHash>>,
}

/// A handle and when it was registered.
#[derive(Clone)]
struct Kept<T> {
    handle: T,
    at: Instant,
}

impl<T: Clone> Kept<T> {
    fn fresh(&self, now: Instant) -> Option<T> {
        (now.saturating_duration_since(self.at) < REFRESH).then(|| self.handle.clone())
    }
}

impl RouteSeries {
    fn new(method: &'static str, route: &str, now: Instant) -> Self {
        let route: Arc<str> = Arc::from(route);
        Self {
            duration: Kept {
                handle: duration_series(method, &route),
                at: now,
            },
            method,
            route,
            requests: RwLock::new(HashMap::default()),
        }
    }

    fn counter(&self, status: u16, now: Instant) -> Counter {
        let kept = self
            .requests
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&status)
            .and_then(|k| k.fresh(now));
        if let Some(counter) = kept {
            return counter;
        }
        let handle = metrics::counter!(
            "http_requests_total",
            "method" => self.method,
            "route" => self.route.to_string(),
            "status" => status.to_string()
        );
        self.requests.write().unwrap_or_else(PoisonError::into_inner).insert(
            status,
            Kept {
                handle: handle.clone(),
                at: now,
            },
        );
        handle
    }
}

fn duration_series(method: &'static str, route: &str) -> Histogram {
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route.to_owned())
}

/// The kept series of every method and route seen.
#[derive(Default)]
pub(crate) struct HttpMetrics {
    series: RwLock<HashMap<&'static str, RoutesSeries, FastHash>>,
}

/// The kept series of one method, by route.
type RoutesSeries = HashMap<Box<str>, Arc<RouteSeries>, FastHash>;

/// The maps' hasher: looked up on every request, keyed by labels the
/// server itself chose (methods, route templates, status codes).
type FastHash = foldhash::fast::RandomState;

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpMetrics").finish_non_exhaustive()
    }
}

impl HttpMetrics {
    /// Counts one answer with `status` to `method` on `route` (a route
    /// template or `unmatched`), which took since `start`.
    pub(crate) fn record(&self, method: &'static str, route: &str, status: u16, start: Instant) {
        let now = Instant::now();
        let series = self.route(method, route, now);
        series.counter(status, now).increment(1);
        let duration = series.duration.fresh(now).unwrap_or_else(|| {
            // Registered again below the next time this route is looked up.
            duration_series(method, route)
        });
        duration.record(now.saturating_duration_since(start).as_secs_f64());
    }

    fn route(&self, method: &'static str, route: &str, now: Instant) -> Arc<RouteSeries> {
        let found = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(method)
            .and_then(|routes| routes.get(route))
            .filter(|s| s.duration.fresh(now).is_some())
            .cloned();
        if let Some(series) = found {
            return series;
        }
        let mut all = self.series.write().unwrap_or_else(PoisonError::into_inner);
        let routes = all.entry(method).or_default();
        let series = Arc::new(RouteSeries::new(method, route, now));
        routes.insert(route.into(), Arc::clone(&series));
        series
    }
}
