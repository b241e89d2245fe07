//! The gateway's live state: an immutable [`Snapshot`] of slots and routes behind an `ArcSwap`.
//!
//! Requests load the current snapshot without locking. Every change (admin weight, promote, rollback,
//! reload) builds a new snapshot and swaps it in atomically; requests in flight keep the snapshot,
//! and so the slot `Arc`, they started with.
//!
//! Reload semantics: the file is the source of truth, but an operator's runtime change to a route
//! (weight, promote) survives a reload for as long as that route's `stable`/`canary`/`canary_weight`
//! in the file stay what they were when the change was made. Editing them in the file wins.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use crossbeam_utils::CachePadded;
use switchyard_config::{Config, RouteSpec, SlotSpec};
use switchyard_routing::{
    KeySource, OverrideRule, RouteTable, SlidingWindow, Splitter, WindowSnapshot,
};

use crate::slot::{self, Slot};
use crate::telemetry;

/// Seconds covered by the per-slot statistics in the admin API.
pub const STATS_WINDOW_S: usize = 60;

/// Live counters of one slot, kept across reloads while the slot name exists.
///
/// The window and the in-flight count are kept per thread (each data-plane worker records into its
/// own, uncontended, each on its own cache line) and summed when read: one lock or counter shared by
/// every worker costs a cache-line transfer between cores per request.
pub struct SlotStats {
    windows: thread_local::ThreadLocal<CachePadded<Mutex<SlidingWindow>>>,
    inflight: thread_local::ThreadLocal<CachePadded<AtomicI64>>,
    epoch: Instant,
}

impl SlotStats {
    fn new(epoch: Instant) -> Self {
        Self {
            windows: thread_local::ThreadLocal::new(),
            inflight: thread_local::ThreadLocal::new(),
            epoch,
        }
    }

    fn seconds_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_secs()
    }

    /// Records a request that finished at `at` (the caller's clock reading, to read it once).
    pub fn record(&self, at: Instant, latency_s: f64, error: bool) {
        let now = self.seconds_at(at);
        let window = self
            .windows
            .get_or(|| CachePadded::new(Mutex::new(SlidingWindow::new(STATS_WINDOW_S))));
        if let Ok(mut w) = window.lock() {
            w.record(now, latency_s, error);
        }
    }

    /// The last minute.
    pub fn snapshot(&self) -> WindowSnapshot {
        let now = self.seconds_at(Instant::now());
        let guards: Vec<_> = self.windows.iter().filter_map(|w| w.lock().ok()).collect();
        SlidingWindow::snapshot_merged(guards.iter().map(|g| &**g), now)
    }

    /// Adds `delta` to this thread's share of the in-flight count.
    pub fn add_inflight(&self, delta: i64) {
        self.inflight
            .get_or(Default::default)
            .fetch_add(delta, Ordering::Relaxed);
    }

    /// Requests being served now (every thread's share; a request that ends on another thread than
    /// it began on leaves one share high and one low, the sum right).
    pub fn inflight(&self) -> i64 {
        self.inflight
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }
}

/// A slot as the snapshot holds it.
#[derive(Clone)]
pub struct SlotHandle {
    /// Its name (shared, used as a metric label).
    pub name: Arc<str>,
    /// Its configuration.
    pub spec: Arc<SlotSpec>,
    /// The backend.
    pub slot: Arc<dyn Slot>,
    /// Its statistics.
    pub stats: Arc<SlotStats>,
    /// When this backend was built.
    pub loaded_at: std::time::SystemTime,
    /// `X-Switchyard-Slot` value, prepared once.
    pub header: http::HeaderValue,
    /// `switchyard_inflight_requests{slot}`, registered once, set from `stats` when scraped.
    pub inflight_gauge: metrics::Gauge,
}

/// A route with its live (possibly operator-changed) stable, canary and weight.
pub struct RouteRuntime {
    /// Route name.
    pub name: Arc<str>,
    /// The route as the file had it when last (re)loaded.
    pub spec: RouteSpec,
    /// Live stable slot.
    pub stable: Arc<str>,
    /// Live canary slot.
    pub canary: Option<Arc<str>>,
    /// Live canary weight, percent.
    pub weight: f64,
    /// Overrides and sticky keys.
    pub splitter: Splitter<Arc<str>>,
    /// Body limit for this route.
    pub max_body_bytes: u64,
    /// Metric handles for each slot this route can send to.
    pub metrics: Arc<HashMap<Arc<str>, telemetry::RouteSlotMetrics>>,
    /// Fallback, breaker, ramp and shadow state (kept across weight changes and reloads).
    pub control: Arc<crate::autopilot::RouteControl>,
    /// Authentication (`None`: open route).
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// Result cache (kept across reloads while its configuration is unchanged).
    pub cache: Option<Arc<crate::cache::ResultCache>>,
}

impl RouteRuntime {
    fn from_spec(
        spec: &RouteSpec,
        server_max_body: u64,
        slots: &HashMap<Arc<str>, SlotHandle>,
        old: Option<&RouteRuntime>,
        auth: Option<crate::auth::Auth>,
    ) -> Self {
        let control = match old.map(|o| &o.control) {
            Some(c) if c.same_spec(spec) => c.clone(),
            _ => Arc::new(crate::autopilot::RouteControl::new(spec)),
        };
        let cache = spec
            .cache
            .as_ref()
            .map(|c| match old.and_then(|o| o.cache.as_ref()) {
                Some(prev) if prev.spec == *c => prev.clone(),
                _ => Arc::new(crate::cache::ResultCache::new(&spec.name, c)),
            });
        let rules = spec
            .matches
            .iter()
            .filter_map(|m| {
                let key = match (&m.header, &m.cookie, &m.query) {
                    (Some(h), None, None) => KeySource::Header(h.to_ascii_lowercase()),
                    (None, Some(c), None) => KeySource::Cookie(c.clone()),
                    (None, None, Some(q)) => KeySource::Query(q.clone()),
                    _ => return None,
                };
                Some(OverrideRule {
                    key,
                    equals: m.equals.clone(),
                    target: Arc::from(m.slot.as_str()),
                })
            })
            .collect();
        let sticky = spec
            .sticky
            .iter()
            .filter_map(|s| KeySource::parse(s))
            .collect();
        Self {
            name: Arc::from(spec.name.as_str()),
            spec: spec.clone(),
            stable: Arc::from(spec.stable.as_str()),
            canary: spec.canary.as_deref().map(Arc::from),
            weight: if spec.canary.is_some() {
                spec.canary_weight
            } else {
                0.0
            },
            splitter: Splitter::new(&spec.name, rules, sticky),
            max_body_bytes: spec.max_body_bytes.unwrap_or(server_max_body),
            metrics: Arc::new(
                slots
                    .values()
                    .map(|h| {
                        let m =
                            telemetry::RouteSlotMetrics::new(&spec.name, &h.name, &h.spec.version);
                        (h.name.clone(), m)
                    })
                    .collect(),
            ),
            control,
            auth: auth.map(Arc::new),
            cache,
        }
    }

    fn with_live(&self, stable: Arc<str>, canary: Option<Arc<str>>, weight: f64) -> Self {
        Self {
            name: self.name.clone(),
            spec: self.spec.clone(),
            stable,
            canary,
            weight,
            splitter: self.splitter.clone(),
            max_body_bytes: self.max_body_bytes,
            metrics: self.metrics.clone(),
            control: self.control.clone(),
            auth: self.auth.clone(),
            cache: self.cache.clone(),
        }
    }

    /// Blue-green: the colour serving now (`blue`/`green`), if the route has colours.
    pub fn active_colour(&self) -> Option<&'static str> {
        match (&self.spec.blue, &self.spec.green) {
            (Some(b), _) if **b == *self.stable => Some("blue"),
            (_, Some(g)) if **g == *self.stable => Some("green"),
            _ => None,
        }
    }

    /// Whether the live values differ from the file's.
    pub fn has_runtime_override(&self) -> bool {
        *self.stable != *self.spec.stable
            || self.canary.as_deref() != self.spec.canary.as_deref()
            || self.weight != self.spec.canary_weight
    }

    /// JSON for the admin API.
    pub fn to_json(&self) -> serde_json::Value {
        let overrides: Vec<_> = self
            .spec
            .matches
            .iter()
            .map(|m| {
                serde_json::json!({
                    "header": m.header, "cookie": m.cookie, "query": m.query,
                    "equals": m.equals, "slot": m.slot,
                })
            })
            .collect();
        serde_json::json!({
            "name": &*self.name,
            "path": self.spec.path,
            "host": self.spec.host,
            "strip_prefix": self.spec.strip_prefix,
            "stable": &*self.stable,
            "canary": self.canary.as_deref(),
            "canary_weight": self.weight,
            "file": {
                "stable": self.spec.stable,
                "canary": self.spec.canary,
                "canary_weight": self.spec.canary_weight,
            },
            "runtime_override": self.has_runtime_override(),
            "sticky": self.spec.sticky,
            "overrides": overrides,
            "max_body_bytes": self.max_body_bytes,
            "blue_green": self.spec.blue.as_ref().map(|b| serde_json::json!({
                "blue": b, "green": self.spec.green, "active": self.active_colour(),
            })),
            "autopilot": self.control.to_json(),
        })
    }
}

/// Everything a request needs, immutable.
pub struct Snapshot {
    /// The configuration this snapshot was built from.
    pub config: Arc<Config>,
    /// Slots by name.
    pub slots: HashMap<Arc<str>, SlotHandle>,
    /// Route lookup.
    pub table: RouteTable<Arc<RouteRuntime>>,
    /// Routes in file order.
    pub routes: Vec<Arc<RouteRuntime>>,
}

impl Snapshot {
    /// A route by name.
    pub fn route(&self, name: &str) -> Option<&Arc<RouteRuntime>> {
        self.routes.iter().find(|r| &*r.name == name)
    }

    fn with_routes(&self, routes: Vec<Arc<RouteRuntime>>) -> Self {
        let mut table = RouteTable::new();
        for r in &routes {
            table.insert(r.spec.host.as_deref(), &r.spec.path, r.clone());
        }
        Self {
            config: self.config.clone(),
            slots: self.slots.clone(),
            table,
            routes,
        }
    }
}

/// Why an admin change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No such route.
    #[error("no route named `{0}`")]
    UnknownRoute(String),
    /// The change does not apply in the route's state.
    #[error("{0}")]
    Conflict(String),
    /// The value is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// The gateway: current snapshot plus what is needed to change it.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    /// Serialises writers so no change is lost between load and store.
    write: Mutex<()>,
    /// Where the configuration came from; `None` = embedded default.
    pub config_path: Option<PathBuf>,
    /// The admin bearer token, if any.
    admin_token: ArcSwap<Option<String>>,
    /// True once draining on shutdown.
    pub draining: AtomicBool,
    epoch: Instant,
    /// Each data-plane thread's own reference to the current snapshot ([`Gateway::local_snapshot`]).
    local: thread_local::ThreadLocal<CachePadded<Mutex<Option<LocalSnapshot>>>>,
}

/// The snapshot a data-plane request holds while it runs: a reference owned by the thread that
/// serves it. Cloning the snapshot's own `Arc` on every request made both cores write its reference
/// count (and the cache line with it) in turn; this count is only ever touched by one thread.
#[derive(Clone)]
// The outer `Arc` is the point: its count lives in an allocation of the thread's own.
#[allow(clippy::redundant_allocation)]
pub struct LocalSnapshot(Arc<Arc<Snapshot>>);

impl std::ops::Deref for LocalSnapshot {
    type Target = Snapshot;
    fn deref(&self) -> &Snapshot {
        &self.0
    }
}

impl Gateway {
    /// Builds the gateway from a validated configuration.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<Self> {
        let epoch = Instant::now();
        let token = resolve_token(&config)?;
        let base = config_path
            .as_deref()
            .and_then(std::path::Path::parent)
            .map(std::path::Path::to_path_buf);
        let snapshot = build_snapshot(config, None, epoch, base.as_deref())?;
        publish_gauges(&snapshot, None);
        Ok(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            write: Mutex::new(()),
            config_path,
            admin_token: ArcSwap::from_pointee(token),
            draining: AtomicBool::new(false),
            epoch,
            local: thread_local::ThreadLocal::new(),
        })
    }

    /// Whether an admin token is configured (the operator console needs one).
    pub fn has_admin_token(&self) -> bool {
        self.admin_token.load().is_some()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// A cheap guard on the current snapshot, to read it without keeping it (a guard is not to be
    /// held across an `await`).
    pub fn snapshot_guard(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The current snapshot for a request, through this thread's own reference to it (made anew
    /// when the snapshot changed). Publishing a new snapshot drops every thread's reference to the
    /// old one, so an old snapshot lives on only in the requests that began with it.
    pub fn local_snapshot(&self) -> LocalSnapshot {
        let mut held = self
            .local
            .get_or(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Read under the lock: a publish either stored its snapshot before this read, or clears
        // this thread's reference after it.
        let current = self.snapshot.load();
        match &*held {
            Some(local) if Arc::ptr_eq(&*local.0, &*current) => local.clone(),
            _ => {
                let local = LocalSnapshot(Arc::new(arc_swap::Guard::into_inner(current)));
                *held = Some(local.clone());
                local
            }
        }
    }

    /// Makes `snap` the current snapshot, and lets go of the threads' references to the old one.
    fn publish(&self, snap: Snapshot) {
        self.snapshot.store(Arc::new(snap));
        for held in self.local.iter() {
            *held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
    }

    /// The admin token in force.
    pub fn admin_token(&self) -> Arc<Option<String>> {
        self.admin_token.load_full()
    }

    /// Replaces the configuration: builds new slots (reusing unchanged ones), keeps operator changes
    /// to routes whose file values did not change. On error nothing changes.
    pub fn apply_config(&self, config: Config) -> anyhow::Result<()> {
        let _w = self
            .write
            .lock()
            .map_err(|_| anyhow::anyhow!("state lock poisoned"))?;
        let token = resolve_token(&config)?;
        let old = self.snapshot.load_full();
        let base = self
            .config_path
            .as_deref()
            .and_then(std::path::Path::parent);
        let new = build_snapshot(config, Some(&old), self.epoch, base)?;
        publish_gauges(&new, Some(&old));
        self.publish(new);
        self.admin_token.store(Arc::new(token));
        Ok(())
    }

    fn change_route(
        &self,
        name: &str,
        f: impl FnOnce(&RouteRuntime) -> Result<RouteRuntime, ChangeError>,
    ) -> Result<Arc<RouteRuntime>, ChangeError> {
        let _w = self
            .write
            .lock()
            .map_err(|_| ChangeError::Conflict("state lock poisoned".into()))?;
        let old = self.snapshot.load_full();
        let mut routes = old.routes.clone();
        let idx = routes
            .iter()
            .position(|r| &*r.name == name)
            .ok_or_else(|| ChangeError::UnknownRoute(name.to_string()))?;
        let new_route = Arc::new(f(&routes[idx])?);
        routes[idx] = new_route.clone();
        let snap = old.with_routes(routes);
        telemetry::set_route_weight(&new_route.name, new_route.weight);
        self.publish(snap);
        Ok(new_route)
    }

    /// Sets a route's canary weight (percent).
    pub fn set_weight(&self, route: &str, weight: f64) -> Result<Arc<RouteRuntime>, ChangeError> {
        if !weight.is_finite() || !(0.0..=100.0).contains(&weight) {
            return Err(ChangeError::Invalid(format!(
                "canary_weight {weight} is outside 0–100"
            )));
        }
        self.change_route(route, |r| {
            if r.canary.is_none() && weight > 0.0 {
                return Err(ChangeError::Conflict(format!(
                    "route `{}` has no canary",
                    r.name
                )));
            }
            Ok(r.with_live(r.stable.clone(), r.canary.clone(), weight))
        })
    }

    /// Makes the canary the stable slot, with no canary and weight 0.
    pub fn promote(&self, route: &str) -> Result<Arc<RouteRuntime>, ChangeError> {
        self.change_route(route, |r| match &r.canary {
            Some(c) => Ok(r.with_live(c.clone(), None, 0.0)),
            None => Err(ChangeError::Conflict(format!(
                "route `{}` has no canary to promote",
                r.name
            ))),
        })
    }

    /// Blue-green: sends all traffic to the other colour, after checking it is ready (loaded, and
    /// not failing: under 50 % errors over the last minute if it served any).
    pub fn switch(&self, route: &str) -> Result<Arc<RouteRuntime>, ChangeError> {
        let snap = self.snapshot.load_full();
        self.change_route(route, |r| {
            let (Some(blue), Some(green)) = (&r.spec.blue, &r.spec.green) else {
                return Err(ChangeError::Conflict(format!(
                    "route `{}` is not blue-green",
                    r.name
                )));
            };
            let target = if *r.stable == **blue { green } else { blue };
            let handle = snap
                .slots
                .get(target.as_str())
                .ok_or_else(|| ChangeError::Conflict(format!("slot `{target}` is not loaded")))?;
            let w = handle.stats.snapshot();
            if w.requests >= 10 && w.error_rate() > 0.5 {
                return Err(ChangeError::Conflict(format!(
                    "slot `{target}` is failing ({:.0} % errors over the last minute)",
                    w.error_rate() * 100.0
                )));
            }
            tracing::info!(route = %r.name, from = %r.stable, to = %target, "blue-green switch");
            Ok(r.with_live(Arc::from(target.as_str()), None, 0.0))
        })
    }

    /// Sends all traffic to stable at once (weight 0; overrides still apply).
    pub fn rollback(&self, route: &str) -> Result<Arc<RouteRuntime>, ChangeError> {
        self.change_route(route, |r| {
            Ok(r.with_live(r.stable.clone(), r.canary.clone(), 0.0))
        })
    }
}

fn resolve_token(config: &Config) -> anyhow::Result<Option<String>> {
    match (&config.admin.token, &config.admin.token_env) {
        (Some(t), _) => Ok(Some(t.clone())),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => anyhow::bail!("admin.token_env: environment variable `{var}` is not set or empty"),
        },
        (None, None) => Ok(None),
    }
}

fn build_snapshot(
    config: Config,
    old: Option<&Snapshot>,
    epoch: Instant,
    base_dir: Option<&std::path::Path>,
) -> anyhow::Result<Snapshot> {
    // Before any model slot loads: the library the whole configuration needs.
    slot::init_runtime_for(&config);
    let mut slots = HashMap::new();
    for spec in &config.slots {
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let prev = old.and_then(|o| o.slots.get(&name));
        let handle = match prev {
            // Unchanged slot: keep the running backend (and its pools, models, stats).
            Some(p)
                if *p.spec == *spec
                    && (matches!(
                        spec.kind,
                        switchyard_config::SlotKind::Upstream | switchyard_config::SlotKind::Static
                    ) || old.is_some_and(|o| {
                        o.config.engine == config.engine && o.config.history == config.history
                    })) =>
            {
                p.clone()
            }
            _ => {
                let slot = slot::build(spec, &config, base_dir)
                    .map_err(|e| anyhow::anyhow!("slot `{}`: {e:#}", spec.name))?;
                SlotHandle {
                    header: http::HeaderValue::from_str(&spec.name)?,
                    inflight_gauge: telemetry::inflight_gauge(&name),
                    name: name.clone(),
                    spec: Arc::new(spec.clone()),
                    slot,
                    stats: prev
                        .map(|p| p.stats.clone())
                        .unwrap_or_else(|| Arc::new(SlotStats::new(epoch))),
                    loaded_at: std::time::SystemTime::now(),
                }
            }
        };
        slots.insert(name, handle);
    }

    let mut routes = Vec::new();
    for spec in &config.routes {
        let auth = crate::auth::Auth::from_spec(spec, base_dir)
            .map_err(|e| anyhow::anyhow!("route `{}`: {e:#}", spec.name))?;
        let fresh = RouteRuntime::from_spec(
            spec,
            config.server.max_body_bytes,
            &slots,
            old.and_then(|o| o.route(&spec.name)).map(|r| &**r),
            auth,
        );
        let prev = old.and_then(|o| o.route(&spec.name));
        let route = match prev {
            Some(p)
                if p.has_runtime_override()
                    && p.spec.stable == spec.stable
                    && p.spec.canary == spec.canary
                    && p.spec.canary_weight == spec.canary_weight
                    && slots.contains_key(&p.stable)
                    && p.canary.as_ref().is_none_or(|c| slots.contains_key(c)) =>
            {
                tracing::info!(route = %spec.name, stable = %p.stable, canary = ?p.canary.as_deref(),
                    canary_weight = p.weight, "keeping the operator's runtime change to this route");
                fresh.with_live(p.stable.clone(), p.canary.clone(), p.weight)
            }
            _ => fresh,
        };
        routes.push(Arc::new(route));
    }
    let mut table = RouteTable::new();
    for r in &routes {
        table.insert(r.spec.host.as_deref(), &r.spec.path, r.clone());
    }
    Ok(Snapshot {
        config: Arc::new(config),
        slots,
        table,
        routes,
    })
}

fn publish_gauges(new: &Snapshot, old: Option<&Snapshot>) {
    if let Some(old) = old {
        for h in old.slots.values() {
            let same = new
                .slots
                .get(&h.name)
                .is_some_and(|n| n.spec.kind == h.spec.kind && n.spec.version == h.spec.version);
            if !same {
                telemetry::set_slot_info(&h.name, h.spec.kind.as_str(), &h.spec.version, 0.0);
            }
        }
    }
    for h in new.slots.values() {
        telemetry::set_slot_info(&h.name, h.spec.kind.as_str(), &h.spec.version, 1.0);
    }
    for r in &new.routes {
        telemetry::set_route_weight(&r.name, r.weight);
    }
}

impl SlotHandle {
    /// The version serving now (a hot swap may have changed it from the configured one).
    pub fn live_version(&self) -> Arc<str> {
        self.slot
            .version()
            .unwrap_or_else(|| Arc::from(self.spec.version.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway() -> Gateway {
        let config = switchyard_config::load_str(
            r#"
            [[slot]]
            name = "a"
            kind = "upstream"
            url = "http://127.0.0.1:9"
            [[slot]]
            name = "b"
            kind = "upstream"
            url = "http://127.0.0.1:9"
            [[route]]
            name = "r"
            path = "/"
            stable = "a"
            canary = "b"
            "#,
        )
        .expect("config");
        Gateway::new(config, None).expect("gateway")
    }

    fn weight(snap: &Snapshot) -> f64 {
        snap.routes[0].weight
    }

    #[test]
    fn a_thread_reuses_its_reference_until_the_snapshot_changes_and_then_lets_the_old_one_go() {
        let gw = gateway();
        let first = gw.local_snapshot();
        assert!(Arc::ptr_eq(&first.0, &gw.local_snapshot().0));
        let old = Arc::downgrade(&*first.0);
        drop(first);

        gw.set_weight("r", 25.0).expect("weight");
        // Published: the thread's reference to the old snapshot is gone with the change.
        assert!(old.upgrade().is_none());
        let now = gw.local_snapshot();
        assert_eq!(weight(&now), 25.0);
        assert_eq!(weight(&gw.snapshot()), 25.0);

        // Another thread gets its own reference to the same snapshot.
        let other = std::thread::scope(|s| s.spawn(|| gw.local_snapshot()).join().unwrap());
        assert!(Arc::ptr_eq(&*other.0, &*now.0));
        assert!(!Arc::ptr_eq(&other.0, &now.0));
    }

    #[test]
    fn the_in_flight_count_sums_every_threads_share() {
        let stats = SlotStats::new(Instant::now());
        stats.add_inflight(1);
        stats.add_inflight(1);
        std::thread::scope(|s| {
            s.spawn(|| stats.add_inflight(1));
        });
        assert_eq!(stats.inflight(), 3);
        // A request that ends on another thread than it began on.
        std::thread::scope(|s| {
            s.spawn(|| stats.add_inflight(-1));
        });
        stats.add_inflight(-1);
        assert_eq!(stats.inflight(), 1);
    }
}
