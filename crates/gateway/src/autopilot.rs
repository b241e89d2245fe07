//! The canary autopilot of one route: circuit breaker, gated ramp and shadow-comparison state.
//!
//! A [`RouteControl`] outlives the snapshots it is referenced from: weight changes, promotions and
//! reloads that leave the route's canary settings alone keep it (and its history). The request path
//! consults it without locks on the common path (one atomic load for the breaker state); the ramp is
//! driven by [`run`], a task on the control runtime that ticks every 250 ms.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use switchyard_config::{BreakerSpec, FallbackSpec, RampSpec, RouteSpec, ShadowSpec};
use switchyard_routing::{SlidingWindow, WindowSnapshot};

use crate::state::Gateway;

/// Breaker states as exported in `switchyard_breaker_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BreakerState {
    /// Canary traffic flows.
    Closed = 0,
    /// Canary traffic goes to stable.
    Open = 1,
    /// A probe share of canary traffic flows.
    HalfOpen = 2,
}

impl BreakerState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }

    /// Name for the admin API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

struct BreakerInner {
    window: SlidingWindow,
    opened_at: Option<Instant>,
    probes_ok: u64,
    reason: Option<String>,
    transitions: u64,
}

/// A circuit breaker on a route's canary.
pub struct Breaker {
    spec: BreakerSpec,
    state: AtomicU8,
    inner: Mutex<BreakerInner>,
    gauge: metrics::Gauge,
}

/// What the breaker lets a canary-bound request do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go to the canary.
    Canary,
    /// Go to the canary as a half-open probe.
    Probe,
    /// Go to stable instead.
    Stable,
}

impl Breaker {
    fn new(spec: BreakerSpec, route: &str, slot: &str) -> Self {
        let gauge = metrics::gauge!("switchyard_breaker_state", "route" => route.to_string(), "slot" => slot.to_string());
        gauge.set(0.0);
        Self {
            inner: Mutex::new(BreakerInner {
                window: SlidingWindow::new(spec.window_s as usize),
                opened_at: None,
                probes_ok: 0,
                reason: None,
                transitions: 0,
            }),
            spec,
            state: AtomicU8::new(BreakerState::Closed as u8),
            gauge,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Relaxed))
    }

    fn set(&self, s: BreakerState) {
        self.state.store(s as u8, Ordering::Relaxed);
        self.gauge.set(s as u8 as f64);
    }

    /// Decides for one canary-bound request; `bucket` is a uniform number in 0..10000.
    pub fn admit(&self, bucket: u64) -> Admit {
        match self.state() {
            BreakerState::Closed => Admit::Canary,
            BreakerState::Open => {
                let Ok(mut inner) = self.inner.lock() else {
                    return Admit::Stable;
                };
                let cooled = inner
                    .opened_at
                    .is_some_and(|t| t.elapsed() >= Duration::from_secs(self.spec.cooldown_s));
                if cooled && self.state() == BreakerState::Open {
                    inner.probes_ok = 0;
                    inner.transitions += 1;
                    self.set(BreakerState::HalfOpen);
                    tracing::info!(
                        state = "half_open",
                        "breaker: cooldown over, probing the canary"
                    );
                    return Admit::Probe;
                }
                Admit::Stable
            }
            BreakerState::HalfOpen => {
                if (bucket as f64) < self.spec.probe_percent * 100.0 {
                    Admit::Probe
                } else {
                    Admit::Stable
                }
            }
        }
    }

    /// Records the outcome of a canary request (`ok` = answered below 500 in time).
    pub fn record(&self, route: &str, now_s: u64, latency_s: f64, ok: bool, probe: bool) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.window.record(now_s, latency_s, !ok);
        let slow = self.spec.max_p95_ms > 0 && latency_s * 1e3 > self.spec.max_p95_ms as f64;
        match self.state() {
            BreakerState::Closed => {
                let w = inner.window.snapshot(now_s);
                if w.requests < self.spec.min_requests {
                    return;
                }
                let reason = if w.error_rate() > self.spec.max_error_rate {
                    Some(format!(
                        "error rate {:.1} % over {} requests > {:.1} %",
                        w.error_rate() * 100.0,
                        w.requests,
                        self.spec.max_error_rate * 100.0
                    ))
                } else if self.spec.max_p95_ms > 0 && w.p95_s * 1e3 > self.spec.max_p95_ms as f64 {
                    Some(format!(
                        "p95 latency {:.0} ms over {} requests > {} ms",
                        w.p95_s * 1e3,
                        w.requests,
                        self.spec.max_p95_ms
                    ))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    tracing::warn!(route, %reason, "breaker open: canary traffic goes to stable");
                    inner.opened_at = Some(Instant::now());
                    inner.reason = Some(reason);
                    inner.transitions += 1;
                    self.set(BreakerState::Open);
                }
            }
            BreakerState::HalfOpen if probe => {
                if ok && !slow {
                    inner.probes_ok += 1;
                    if inner.probes_ok >= self.spec.probe_successes {
                        tracing::info!(
                            route,
                            probes = inner.probes_ok,
                            "breaker closed: the canary is healthy again"
                        );
                        inner.window = SlidingWindow::new(self.spec.window_s as usize);
                        inner.reason = None;
                        inner.transitions += 1;
                        self.set(BreakerState::Closed);
                    }
                } else {
                    let reason = if ok {
                        "a probe was too slow"
                    } else {
                        "a probe failed"
                    };
                    tracing::warn!(route, reason, "breaker open again");
                    inner.opened_at = Some(Instant::now());
                    inner.reason = Some(reason.into());
                    inner.transitions += 1;
                    self.set(BreakerState::Open);
                }
            }
            _ => {}
        }
    }

    fn to_json(&self, now_s: u64) -> serde_json::Value {
        let inner = self.inner.lock();
        let (w, reason, transitions) = match &inner {
            Ok(i) => (i.window.snapshot(now_s), i.reason.clone(), i.transitions),
            Err(_) => (WindowSnapshot::default(), None, 0),
        };
        json!({
            "state": self.state().as_str(),
            "reason": reason,
            "transitions": transitions,
            "window": { "requests": w.requests, "errors": w.errors, "p95_ms": w.p95_s * 1e3 },
            "config": self.spec,
        })
    }
}

/// Shadow comparison results, since the current ramp step began (or since start).
#[derive(Debug, Clone, Default)]
pub struct ShadowStats {
    /// Face comparisons and the sum of their F1.
    pub face_n: u64,
    /// Sum of F1 scores.
    pub face_f1_sum: f64,
    /// ASR comparisons, word errors and reference words.
    pub asr_n: u64,
    /// Word edits of canary text against stable text.
    pub asr_errors: u64,
    /// Words of stable text.
    pub asr_words: u64,
    /// Upstream comparisons and how many were identical (status and body).
    pub http_n: u64,
    /// Identical answers.
    pub http_same: u64,
    /// Copies skipped because `max_concurrency` shadow requests were running.
    pub skipped: u64,
    /// Shadow requests that failed on the canary.
    pub failed: u64,
}

impl ShadowStats {
    /// Mean face F1 (None without samples).
    pub fn face_f1(&self) -> Option<f64> {
        (self.face_n > 0).then(|| self.face_f1_sum / self.face_n as f64)
    }

    /// Aggregate WER (None without samples).
    pub fn wer(&self) -> Option<f64> {
        (self.asr_n > 0).then(|| {
            if self.asr_words == 0 {
                if self.asr_errors == 0 { 0.0 } else { 1.0 }
            } else {
                self.asr_errors as f64 / self.asr_words as f64
            }
        })
    }

    /// Share of identical upstream answers (None without samples).
    pub fn match_rate(&self) -> Option<f64> {
        (self.http_n > 0).then(|| self.http_same as f64 / self.http_n as f64)
    }

    fn samples(&self) -> u64 {
        self.face_n + self.asr_n + self.http_n
    }
}

/// Shadow traffic of a route.
pub struct Shadow {
    /// Settings.
    pub spec: ShadowSpec,
    /// Shadow requests running now.
    pub running: AtomicUsize,
    /// Highest number running at once so far.
    pub peak: AtomicUsize,
    stats: Mutex<ShadowStats>,
    last_log: Mutex<Option<Instant>>,
    f1: metrics::Gauge,
    wer: metrics::Gauge,
    matches: metrics::Gauge,
}

/// A slot of the shadow's concurrency cap, released on drop.
pub struct ShadowPermit(Arc<RouteControl>);

impl Drop for ShadowPermit {
    fn drop(&mut self) {
        if let Some(s) = &self.0.shadow {
            s.running.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The comparable part of a model slot's answer, attached to responses as an extension.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelOutput {
    /// Face boxes `[x1, y1, x2, y2]` in image pixels.
    Faces(Vec<[f32; 4]>),
    /// Recognised text.
    Text(String),
}

/// The outcome of comparing the canary's answer with stable's.
#[derive(Debug, Clone, PartialEq)]
pub enum Comparison {
    /// Face F1 at IoU ≥ 0.5.
    Faces(f64),
    /// Word edits and stable's word count.
    Text(usize, usize),
    /// Identical status and body.
    Http(bool),
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// F1 of `candidate` boxes against `reference` boxes, matching greedily by IoU ≥ 0.5 (1.0 when
/// both are empty).
pub fn face_f1(reference: &[[f32; 4]], candidate: &[[f32; 4]]) -> f64 {
    if reference.is_empty() && candidate.is_empty() {
        return 1.0;
    }
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (i, r) in reference.iter().enumerate() {
        for (j, c) in candidate.iter().enumerate() {
            let v = iou(r, c);
            if v >= 0.5 {
                pairs.push((v, i, j));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut used_r, mut used_c) = (vec![false; reference.len()], vec![false; candidate.len()]);
    let mut tp = 0usize;
    for (_, i, j) in pairs {
        if !used_r[i] && !used_c[j] {
            used_r[i] = true;
            used_c[j] = true;
            tp += 1;
        }
    }
    2.0 * tp as f64 / (reference.len() + candidate.len()) as f64
}

/// Compares two model outputs of the same kind.
pub fn compare(stable: &ModelOutput, canary: &ModelOutput) -> Option<Comparison> {
    match (stable, canary) {
        (ModelOutput::Faces(a), ModelOutput::Faces(b)) => Some(Comparison::Faces(face_f1(a, b))),
        (ModelOutput::Text(a), ModelOutput::Text(b)) => {
            let (e, n) = switchyard_speech::word_errors(a, b);
            Some(Comparison::Text(e, n))
        }
        _ => None,
    }
}

impl Shadow {
    fn new(spec: ShadowSpec, route: &str) -> Self {
        let r = route.to_string();
        Self {
            spec,
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            stats: Mutex::new(ShadowStats::default()),
            last_log: Mutex::new(None),
            f1: metrics::gauge!("switchyard_shadow_face_f1", "route" => r.clone()),
            wer: metrics::gauge!("switchyard_shadow_wer", "route" => r.clone()),
            matches: metrics::gauge!("switchyard_shadow_match_ratio", "route" => r),
        }
    }

    /// Whether this request (uniform `bucket` in 0..10000) is copied.
    pub fn sampled(&self, bucket: u64) -> bool {
        (bucket as f64) < self.spec.percent * 100.0
    }

    /// A slot under the concurrency cap, or `None` (the copy is skipped, never queued).
    fn try_start(&self) -> bool {
        let mut cur = self.running.load(Ordering::Acquire);
        loop {
            if cur >= self.spec.max_concurrency {
                if let Ok(mut s) = self.stats.lock() {
                    s.skipped += 1;
                }
                metrics::counter!("switchyard_shadow_requests_total", "result" => "skipped")
                    .increment(1);
                return false;
            }
            match self
                .running
                .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.peak.fetch_max(cur + 1, Ordering::AcqRel);
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Records a comparison; logs disagreements (at most one line a second).
    pub fn record(&self, route: &str, result: Option<Comparison>, detail: impl FnOnce() -> String) {
        let Ok(mut s) = self.stats.lock() else { return };
        let disagree = match result {
            None => {
                s.failed += 1;
                metrics::counter!("switchyard_shadow_requests_total", "result" => "failed")
                    .increment(1);
                true
            }
            Some(Comparison::Faces(f1)) => {
                s.face_n += 1;
                s.face_f1_sum += f1;
                f1 < 1.0
            }
            Some(Comparison::Text(e, n)) => {
                s.asr_n += 1;
                s.asr_errors += e as u64;
                s.asr_words += n as u64;
                e > 0
            }
            Some(Comparison::Http(same)) => {
                s.http_n += 1;
                s.http_same += u64::from(same);
                !same
            }
        };
        if result.is_some() {
            metrics::counter!("switchyard_shadow_requests_total", "result" => "compared")
                .increment(1);
        }
        if let Some(v) = s.face_f1() {
            self.f1.set(v);
        }
        if let Some(v) = s.wer() {
            self.wer.set(v);
        }
        if let Some(v) = s.match_rate() {
            self.matches.set(v);
        }
        drop(s);
        if disagree
            && let Ok(mut last) = self.last_log.lock()
            && last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            *last = Some(Instant::now());
            tracing::info!(route, comparison = ?result, detail = %detail(), "shadow: canary disagrees with stable");
        }
    }

    /// The results so far.
    pub fn stats(&self) -> ShadowStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn reset(&self) {
        if let Ok(mut s) = self.stats.lock() {
            *s = ShadowStats::default();
        }
    }
}

/// Where a ramp is.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RampPhase {
    /// Not started.
    Idle,
    /// At `steps[step]` since `since`.
    Running {
        /// Index into `steps`.
        step: usize,
    },
    /// Held by an operator at its step.
    Paused {
        /// Index into `steps`.
        step: usize,
    },
    /// The canary was promoted.
    Promoted,
    /// Rolled back to 0.
    RolledBack {
        /// Why.
        reason: String,
    },
    /// Stopped by an operator (weight 0).
    Aborted,
}

/// One decision of the ramp.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    /// When, RFC 3339.
    pub time: String,
    /// Weight before, percent.
    pub from: f64,
    /// Weight after, percent.
    pub to: f64,
    /// What happened and why.
    pub reason: String,
}

struct RampInner {
    phase: RampPhase,
    step_started: Instant,
    /// Canary outcomes since the step began.
    requests: u64,
    errors: u64,
    window: SlidingWindow,
    decisions: VecDeque<Decision>,
}

/// The automatic ramp of a route.
pub struct Ramp {
    /// Settings.
    pub spec: RampSpec,
    inner: Mutex<RampInner>,
}

impl Ramp {
    fn new(spec: RampSpec) -> Self {
        Self {
            inner: Mutex::new(RampInner {
                phase: RampPhase::Idle,
                step_started: Instant::now(),
                requests: 0,
                errors: 0,
                window: SlidingWindow::new(60),
                decisions: VecDeque::new(),
            }),
            spec,
        }
    }

    /// The phase.
    pub fn phase(&self) -> RampPhase {
        self.inner
            .lock()
            .map(|i| i.phase.clone())
            .unwrap_or(RampPhase::Idle)
    }

    fn record(&self, now_s: u64, latency_s: f64, ok: bool) {
        if let Ok(mut i) = self.inner.lock()
            && matches!(i.phase, RampPhase::Running { .. })
        {
            i.requests += 1;
            i.errors += u64::from(!ok);
            i.window.record(now_s, latency_s, !ok);
        }
    }
}

/// Everything the autopilot keeps about one route.
pub struct RouteControl {
    /// Route name.
    pub route: Arc<str>,
    /// The canary the controls were built for.
    pub canary: Option<Arc<str>>,
    /// Per-request fallback settings.
    pub fallback: Option<FallbackSpec>,
    /// Circuit breaker.
    pub breaker: Option<Breaker>,
    /// Automatic ramp.
    pub ramp: Option<Ramp>,
    /// Shadow comparison.
    pub shadow: Option<Shadow>,
    /// Per-client rate limit and its key (`sticky` or `ip`).
    pub rate_limit: Option<(
        switchyard_routing::RateLimiter,
        switchyard_config::RateLimitSpec,
    )>,
    /// Canary requests answered by stable since these controls were built.
    pub fallbacks: std::sync::atomic::AtomicU64,
    epoch: Instant,
}

impl RouteControl {
    /// The controls of a route as configured.
    pub fn new(spec: &RouteSpec) -> Self {
        let canary: Option<Arc<str>> = spec.canary.as_deref().map(Arc::from);
        let slot = spec.canary.clone().unwrap_or_default();
        Self {
            route: Arc::from(spec.name.as_str()),
            fallback: spec.fallback.clone(),
            breaker: spec
                .breaker
                .clone()
                .map(|b| Breaker::new(b, &spec.name, &slot)),
            ramp: spec.ramp.clone().map(Ramp::new),
            shadow: spec.shadow.clone().map(|s| Shadow::new(s, &spec.name)),
            rate_limit: spec.rate_limit.clone().map(|r| {
                (
                    switchyard_routing::RateLimiter::new(r.requests_per_s, f64::from(r.burst)),
                    r,
                )
            }),
            canary,
            fallbacks: std::sync::atomic::AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether `spec` asks for the same controls (so the running state can be kept on reload).
    pub fn same_spec(&self, spec: &RouteSpec) -> bool {
        self.canary.as_deref() == spec.canary.as_deref()
            && self.fallback == spec.fallback
            && self.breaker.as_ref().map(|b| &b.spec) == spec.breaker.as_ref()
            && self.ramp.as_ref().map(|r| &r.spec) == spec.ramp.as_ref()
            && self.shadow.as_ref().map(|s| &s.spec) == spec.shadow.as_ref()
            && self.rate_limit.as_ref().map(|r| &r.1) == spec.rate_limit.as_ref()
    }

    /// Seconds since this control was created, fractional (rate limiting).
    pub fn now_f64(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// A shadow slot under the concurrency cap, or `None` (the copy is skipped, never queued).
    pub fn shadow_permit(self: &Arc<Self>) -> Option<ShadowPermit> {
        let s = self.shadow.as_ref()?;
        s.try_start().then(|| ShadowPermit(self.clone()))
    }

    /// Whether anything needs the request path's attention.
    pub fn active(&self) -> bool {
        self.fallback.is_some()
            || self.breaker.is_some()
            || self.ramp.is_some()
            || self.shadow.is_some()
    }

    /// Seconds since this control was created (the clock of its windows).
    pub fn now_s(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Records a canary request's outcome for the breaker and the ramp.
    pub fn record_canary(&self, latency_s: f64, ok: bool, probe: bool) {
        let now = self.now_s();
        if let Some(b) = &self.breaker {
            b.record(&self.route, now, latency_s, ok, probe);
        }
        if let Some(r) = &self.ramp {
            r.record(now, latency_s, ok);
        }
    }

    /// JSON for `GET /admin/routes/{route}`.
    pub fn to_json(&self) -> serde_json::Value {
        let now = self.now_s();
        let ramp = self.ramp.as_ref().map(|r| {
            let i = r.inner.lock();
            match i {
                Ok(i) => json!({
                    "phase": i.phase,
                    "step_weight": match i.phase {
                        RampPhase::Running { step } | RampPhase::Paused { step } => r.spec.steps.get(step).copied(),
                        _ => None,
                    },
                    "step_seconds": i.step_started.elapsed().as_secs(),
                    "step_requests": i.requests,
                    "step_errors": i.errors,
                    "decisions": i.decisions,
                    "config": r.spec,
                }),
                Err(_) => json!(null),
            }
        });
        let shadow = self.shadow.as_ref().map(|s| {
            let st = s.stats();
            json!({
                "percent": s.spec.percent,
                "max_concurrency": s.spec.max_concurrency,
                "running": s.running.load(Ordering::Relaxed),
                "peak_running": s.peak.load(Ordering::Relaxed),
                "face_f1": st.face_f1(), "face_samples": st.face_n,
                "wer": st.wer(), "asr_samples": st.asr_n,
                "match_rate": st.match_rate(), "http_samples": st.http_n,
                "skipped": st.skipped, "failed": st.failed,
            })
        });
        json!({
            "fallback": self.fallback,
            "fallbacks_total": self.fallbacks.load(Ordering::Relaxed),
            "breaker": self.breaker.as_ref().map(|b| b.to_json(now)),
            "ramp": ramp,
            "shadow": shadow,
        })
    }
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// An operator command for a ramp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RampCommand {
    /// Start at the first step.
    Start,
    /// Hold at the current step.
    Pause,
    /// Continue from the held step.
    Resume,
    /// Stop and set the weight to 0.
    Abort,
}

impl RampCommand {
    /// Parses `start`, `pause`, `resume`, `abort`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "start" => Self::Start,
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            "abort" => Self::Abort,
            _ => return None,
        })
    }
}

fn push_decision(i: &mut RampInner, from: f64, to: f64, reason: String) {
    tracing::info!(from, to, %reason, "ramp decision");
    i.decisions.push_back(Decision {
        time: rfc3339_now(),
        from,
        to,
        reason,
    });
    while i.decisions.len() > 100 {
        i.decisions.pop_front();
    }
}

fn enter_step(i: &mut RampInner, step: usize) {
    i.phase = RampPhase::Running { step };
    i.step_started = Instant::now();
    i.requests = 0;
    i.errors = 0;
    i.window = SlidingWindow::new(60);
}

/// Applies an operator command; returns the weight to set, if any.
pub fn command(
    gw: &Gateway,
    route: &str,
    cmd: RampCommand,
) -> Result<serde_json::Value, crate::state::ChangeError> {
    use crate::state::ChangeError;
    let snap = gw.snapshot();
    let r = snap
        .route(route)
        .ok_or_else(|| ChangeError::UnknownRoute(route.to_string()))?
        .clone();
    let ramp = r
        .control
        .ramp
        .as_ref()
        .ok_or_else(|| ChangeError::Conflict(format!("route `{route}` has no [route.ramp]")))?;
    let weight = {
        let mut i = ramp
            .inner
            .lock()
            .map_err(|_| ChangeError::Conflict("ramp state poisoned".into()))?;
        match (cmd, i.phase.clone()) {
            (RampCommand::Start, RampPhase::Running { .. } | RampPhase::Paused { .. }) => {
                return Err(ChangeError::Conflict(
                    "the ramp is already under way".into(),
                ));
            }
            (RampCommand::Start, _) => {
                if r.canary.is_none() {
                    return Err(ChangeError::Conflict(format!(
                        "route `{route}` has no canary"
                    )));
                }
                let w = ramp.spec.steps[0];
                push_decision(&mut i, r.weight, w, "ramp started".into());
                enter_step(&mut i, 0);
                if let Some(s) = &r.control.shadow {
                    s.reset();
                }
                Some(w)
            }
            (RampCommand::Pause, RampPhase::Running { step }) => {
                i.phase = RampPhase::Paused { step };
                push_decision(&mut i, r.weight, r.weight, "paused by an operator".into());
                None
            }
            (RampCommand::Resume, RampPhase::Paused { step }) => {
                push_decision(&mut i, r.weight, r.weight, "resumed by an operator".into());
                enter_step(&mut i, step);
                None
            }
            (RampCommand::Abort, RampPhase::Running { .. } | RampPhase::Paused { .. }) => {
                i.phase = RampPhase::Aborted;
                push_decision(&mut i, r.weight, 0.0, "aborted by an operator".into());
                Some(0.0)
            }
            (cmd, phase) => {
                return Err(ChangeError::Conflict(format!(
                    "cannot {cmd:?} a ramp in phase {}",
                    serde_json::to_value(&phase)
                        .ok()
                        .and_then(|v| v["state"].as_str().map(String::from))
                        .unwrap_or_default()
                )));
            }
        }
    };
    if let Some(w) = weight {
        gw.set_weight(route, w)?;
    }
    Ok(r.control.to_json())
}

/// What one tick decided for a route.
enum Action {
    Weight(f64),
    Promote,
}

fn tick_route(r: &crate::state::RouteRuntime) -> Option<Action> {
    let ramp = r.control.ramp.as_ref()?;
    let mut i = ramp.inner.lock().ok()?;
    let RampPhase::Running { step } = i.phase else {
        return None;
    };
    let spec = &ramp.spec;
    let from = r.weight;
    let fail = |i: &mut RampInner, reason: String| {
        push_decision(i, from, 0.0, format!("rolled back: {reason}"));
        i.phase = RampPhase::RolledBack { reason };
        Some(Action::Weight(0.0))
    };
    if r.canary.is_none() {
        i.phase = RampPhase::Idle;
        return None;
    }
    if let Some(b) = &r.control.breaker
        && b.state() != BreakerState::Closed
    {
        let reason = b
            .inner
            .lock()
            .ok()
            .and_then(|x| x.reason.clone())
            .unwrap_or_default();
        return fail(&mut i, format!("breaker open ({reason})"));
    }
    let now = r.control.now_s();
    let w = i.window.snapshot(now);
    let enough = i.requests >= spec.min_requests;
    if enough {
        let rate = i.errors as f64 / i.requests as f64;
        if rate > spec.max_error_rate {
            let reason = format!(
                "error rate {:.1} % over {} canary requests > {:.1} %",
                rate * 100.0,
                i.requests,
                spec.max_error_rate * 100.0
            );
            return fail(&mut i, reason);
        }
        if spec.max_p95_ms > 0 && w.p95_s * 1e3 > spec.max_p95_ms as f64 {
            let reason = format!(
                "p95 latency {:.0} ms > {} ms",
                w.p95_s * 1e3,
                spec.max_p95_ms
            );
            return fail(&mut i, reason);
        }
    }
    let shadow = r.control.shadow.as_ref().map(|s| s.stats());
    let mut quality_pending = false;
    if let Some(st) = &shadow {
        let ready = st.samples() >= spec.min_shadow_samples;
        // (limit, value, higher is better, name); a limit of 0 turns the gate off.
        let gates = [
            (spec.min_face_f1, st.face_f1(), true, "shadow face F1"),
            (spec.max_wer, st.wer(), false, "shadow WER"),
            (
                spec.min_match_rate,
                st.match_rate(),
                true,
                "shadow match rate",
            ),
        ];
        for (limit, value, at_least, name) in gates {
            if limit <= 0.0 {
                continue;
            }
            match value {
                Some(v) if ready => {
                    let bad = if at_least { v < limit } else { v > limit };
                    if bad {
                        let cmp = if at_least { "<" } else { ">" };
                        let reason = format!(
                            "{name} {v:.3} {cmp} {limit} over {} comparisons",
                            st.samples()
                        );
                        return fail(&mut i, reason);
                    }
                }
                _ => quality_pending = true,
            }
        }
    }
    if i.step_started.elapsed() < Duration::from_secs(spec.interval_s) {
        return None;
    }
    if !enough || quality_pending {
        return None; // hold the step until the gates have their samples
    }
    let reason = format!(
        "gates held at {}% ({} canary requests, {} errors{})",
        spec.steps[step],
        i.requests,
        i.errors,
        shadow
            .map(|s| format!(", {} shadow comparisons", s.samples()))
            .unwrap_or_default()
    );
    if step + 1 < spec.steps.len() {
        let to = spec.steps[step + 1];
        push_decision(&mut i, from, to, reason);
        enter_step(&mut i, step + 1);
        if let Some(s) = &r.control.shadow {
            s.reset();
        }
        Some(Action::Weight(to))
    } else {
        push_decision(&mut i, from, 100.0, format!("{reason}; canary promoted"));
        i.phase = RampPhase::Promoted;
        Some(Action::Promote)
    }
}

/// Drives every route's ramp; runs until the process ends.
pub async fn run(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let snap = gw.snapshot();
        for r in &snap.routes {
            // Auto-start once per control.
            if let Some(ramp) = &r.control.ramp
                && ramp.spec.auto_start
                && ramp.phase() == RampPhase::Idle
                && r.canary.is_some()
            {
                if let Err(e) = command(&gw, &r.name, RampCommand::Start) {
                    tracing::warn!(route = %r.name, error = %e, "ramp auto-start failed");
                }
                continue;
            }
            let result = match tick_route(r) {
                Some(Action::Weight(w)) => gw.set_weight(&r.name, w).map(|_| ()),
                Some(Action::Promote) => gw.promote(&r.name).map(|_| ()),
                None => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(route = %r.name, error = %e, "ramp could not apply its decision");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn face_f1_matches_boxes_by_iou() {
        let a = [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]];
        assert_eq!(face_f1(&a, &a), 1.0);
        assert_eq!(face_f1(&[], &[]), 1.0);
        assert_eq!(face_f1(&a, &[]), 0.0);
        // One match (IoU 0.81), one miss, one false box: F1 = 2·1 / 4.
        let b = [[1.0, 1.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]];
        assert_eq!(face_f1(&a, &b), 0.5);
        // IoU below 0.5 is no match.
        assert_eq!(face_f1(&a[..1], &[[5.0, 5.0, 15.0, 15.0]]), 0.0);
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let spec = BreakerSpec {
            window_s: 10,
            min_requests: 10,
            max_error_rate: 0.2,
            max_p95_ms: 0,
            cooldown_s: 0,
            probe_percent: 100.0,
            probe_successes: 3,
        };
        let b = Breaker::new(spec, "r", "c");
        for _ in 0..9 {
            b.record("r", 1, 0.01, true, false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        for _ in 0..3 {
            b.record("r", 1, 0.01, false, false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        // Cooldown 0: the next request is a probe.
        assert_eq!(b.admit(0), Admit::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record("r", 2, 0.01, false, true);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(0), Admit::Probe);
        for _ in 0..3 {
            b.record("r", 3, 0.01, true, true);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(9999), Admit::Canary);
    }

    #[test]
    fn shadow_cap_is_never_exceeded() {
        let s = Shadow::new(
            ShadowSpec {
                percent: 100.0,
                max_concurrency: 2,
                max_body_bytes: 1,
            },
            "r",
        );
        let spec = RouteSpec {
            shadow: Some(s.spec.clone()),
            ..serde_json::from_value(
                json!({"name": "r", "path": "/", "stable": "a", "canary": "b"}),
            )
            .expect("route")
        };
        let c = Arc::new(RouteControl::new(&spec));
        let a = c.shadow_permit();
        let b = c.shadow_permit();
        assert!(a.is_some() && b.is_some());
        assert!(c.shadow_permit().is_none());
        drop(a);
        assert!(c.shadow_permit().is_some());
        let sh = c.shadow.as_ref().expect("shadow");
        assert_eq!(sh.peak.load(Ordering::Relaxed), 2);
        assert_eq!(sh.stats().skipped, 1);
        assert!(s.try_start());
    }
}
