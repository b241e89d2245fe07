//! Request counts, error counts and latency quantiles over a sliding window of whole seconds.
//!
//! The caller passes the current time in seconds (any monotonic origin), which keeps this pure and
//! testable. Latencies go into log-spaced buckets (10 µs × 1.1ⁱ, up to about 280 s), so quantiles
//! are accurate to about ±5 % and memory per window is fixed.

const LAT_BUCKETS: usize = 180;
const LAT_BASE_S: f64 = 10e-6;
const LAT_GROWTH: f64 = 1.1;

#[derive(Clone)]
struct Second {
    at: u64,
    requests: u64,
    errors: u64,
    latency: Box<[u32; LAT_BUCKETS]>,
}

impl Second {
    fn empty() -> Self {
        Self {
            at: u64::MAX,
            requests: 0,
            errors: 0,
            latency: Box::new([0; LAT_BUCKETS]),
        }
    }
}

/// Counts and latencies of the last `seconds` seconds.
pub struct SlidingWindow {
    seconds: Vec<Second>,
}

/// A summary of a window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowSnapshot {
    /// Requests recorded in the window.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// Median latency in seconds (0 with no requests).
    pub p50_s: f64,
    /// 95th-percentile latency in seconds (0 with no requests).
    pub p95_s: f64,
    /// Requests per second averaged over the window.
    pub rate_per_s: f64,
}

impl WindowSnapshot {
    /// Errors over requests (0 with no requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

fn bucket_of(latency_s: f64) -> usize {
    if latency_s.is_nan() || latency_s <= LAT_BASE_S {
        return 0;
    }
    let i = ((latency_s / LAT_BASE_S).ln() / LAT_GROWTH.ln()).ceil();
    (i as usize).min(LAT_BUCKETS - 1)
}

/// Upper edge of a bucket: a quantile reported from a bucket never understates the latency.
fn bucket_upper(i: usize) -> f64 {
    LAT_BASE_S * LAT_GROWTH.powi(i as i32)
}

impl SlidingWindow {
    /// A window over the last `seconds` whole seconds (at least 1).
    pub fn new(seconds: usize) -> Self {
        Self {
            seconds: vec![Second::empty(); seconds.max(1)],
        }
    }

    /// Records one request that finished at `now_s`.
    pub fn record(&mut self, now_s: u64, latency_s: f64, error: bool) {
        let n = self.seconds.len();
        let s = &mut self.seconds[(now_s % n as u64) as usize];
        if s.at != now_s {
            s.at = now_s;
            s.requests = 0;
            s.errors = 0;
            s.latency.fill(0);
        }
        s.requests += 1;
        s.errors += u64::from(error);
        s.latency[bucket_of(latency_s)] += 1;
    }

    /// Summarises the seconds in `(now_s - seconds, now_s]`.
    pub fn snapshot(&self, now_s: u64) -> WindowSnapshot {
        Self::snapshot_merged([self], now_s)
    }

    /// Summarises several windows as one (say, one per thread): the seconds in
    /// `(now_s - seconds, now_s]` of each, with the first window's length. Default with none.
    pub fn snapshot_merged<'a>(
        windows: impl IntoIterator<Item = &'a SlidingWindow>,
        now_s: u64,
    ) -> WindowSnapshot {
        let mut windows = windows.into_iter().peekable();
        let Some(first) = windows.peek() else {
            return WindowSnapshot::default();
        };
        let n = first.seconds.len() as u64;
        let mut hist = [0u64; LAT_BUCKETS];
        let (mut requests, mut errors) = (0u64, 0u64);
        for s in windows.flat_map(|w| w.seconds.iter()) {
            if s.at <= now_s && now_s - s.at < n {
                requests += s.requests;
                errors += s.errors;
                for (h, c) in hist.iter_mut().zip(s.latency.iter()) {
                    *h += u64::from(*c);
                }
            }
        }
        let quantile = |q: f64| -> f64 {
            if requests == 0 {
                return 0.0;
            }
            let rank = ((q * requests as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, c) in hist.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_upper(i);
                }
            }
            bucket_upper(LAT_BUCKETS - 1)
        };
        WindowSnapshot {
            requests,
            errors,
            p50_s: quantile(0.5),
            p95_s: quantile(0.95),
            rate_per_s: requests as f64 / n as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_windows_summarise_as_one() {
        let (mut one, mut a, mut b) = (
            SlidingWindow::new(10),
            SlidingWindow::new(10),
            SlidingWindow::new(10),
        );
        for i in 0..400u64 {
            let (now, lat, err) = (100 + i % 7, 0.001 * (1 + i % 50) as f64, i % 9 == 0);
            one.record(now, lat, err);
            if i % 3 == 0 { &mut a } else { &mut b }.record(now, lat, err);
        }
        let merged = SlidingWindow::snapshot_merged([&a, &b], 106);
        assert_eq!(merged, one.snapshot(106));
        assert_eq!(merged.requests, 400);
        assert_ne!(a.snapshot(106), merged);
        assert_eq!(
            SlidingWindow::snapshot_merged(std::iter::empty(), 106),
            WindowSnapshot::default()
        );
    }

    #[test]
    fn quantiles_within_ten_percent() {
        let mut w = SlidingWindow::new(60);
        // 1..=100 ms, one each: p50 = 50 ms, p95 = 95 ms.
        for i in 1..=100 {
            w.record(1000, f64::from(i) / 1000.0, i % 10 == 0);
        }
        let s = w.snapshot(1000);
        assert_eq!(s.requests, 100);
        assert_eq!(s.errors, 10);
        assert!((0.050..=0.055).contains(&s.p50_s), "{s:?}");
        assert!((0.095..=0.1045).contains(&s.p95_s), "{s:?}");
        assert!((s.error_rate() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn old_seconds_fall_out() {
        let mut w = SlidingWindow::new(60);
        w.record(100, 0.5, true);
        w.record(130, 0.001, false);
        assert_eq!(w.snapshot(130).requests, 2);
        assert_eq!(w.snapshot(159).requests, 2);
        let s = w.snapshot(160);
        assert_eq!((s.requests, s.errors), (1, 0));
        assert!(s.p95_s < 0.0011);
        assert_eq!(w.snapshot(200).requests, 0);
        // A slot reused after wrapping starts from zero.
        w.record(190, 0.002, false);
        assert_eq!(w.snapshot(190).requests, 1);
    }

    #[test]
    fn empty_and_extreme_latencies() {
        let mut w = SlidingWindow::new(1);
        assert_eq!(w.snapshot(5), WindowSnapshot::default());
        w.record(5, 0.0, false);
        w.record(5, 1e9, false);
        w.record(5, f64::NAN, false);
        let s = w.snapshot(5);
        assert_eq!(s.requests, 3);
        assert!(s.p95_s > 100.0);
    }
}
