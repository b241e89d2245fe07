//! Picking a slot for one request: override rules first, then a sticky hash bucket compared with the
//! canary weight.
//!
//! # The sticky hash
//!
//! The key's bytes (a header, cookie or query value, or the client IP in its textual form such as
//! `203.0.113.7` or `2001:db8::1`) are hashed with XXH3-64 seeded by XXH3-64 of the route name, and the
//! hash modulo 10,000 is the request's *bucket*. A request goes to the canary when
//! `bucket < canary_weight × 100`. Consequences:
//!
//! * the same key always lands in the same bucket, in every process and on every replica;
//! * raising the weight only adds buckets, so users already on the canary stay there;
//! * two routes split independently (different seeds), so one user is not always the canary tester.

use std::borrow::Cow;
use std::net::IpAddr;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Number of sticky buckets: weights have a resolution of 0.01 %.
pub const BUCKETS: u32 = 10_000;

/// What a request offers to the splitter. Implemented by the gateway over an HTTP request.
pub trait RequestView {
    /// A header value by lower-case name (the first one if repeated).
    fn header(&self, name: &str) -> Option<&str>;
    /// A cookie value by name.
    fn cookie(&self, name: &str) -> Option<Cow<'_, str>>;
    /// A query parameter by name, percent-decoded.
    fn query(&self, name: &str) -> Option<Cow<'_, str>>;
    /// The client's address as the gateway sees it.
    fn client_ip(&self) -> Option<IpAddr>;
    /// The client's address as text (`203.0.113.7`, `2001:db8::1`): the bytes the `ip` sticky key
    /// hashes. Override it when the text is already at hand.
    fn client_ip_text(&self) -> Option<Cow<'_, str>> {
        self.client_ip().map(|ip| Cow::Owned(ip.to_string()))
    }
    /// A claim of the request's verified token (`jwt:NAME` keys); `None` without one.
    fn claim(&self, _name: &str) -> Option<Cow<'_, str>> {
        None
    }
}

/// Where a key value is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header (name stored lower-case).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// A query parameter.
    Query(String),
    /// The client IP address.
    Ip,
    /// A claim of the verified JWT (`jwt:sub`).
    Claim(String),
}

impl KeySource {
    /// Parses `header:NAME`, `cookie:NAME`, `query:NAME`, `jwt:CLAIM` or `ip`.
    pub fn parse(spec: &str) -> Option<Self> {
        if spec == "ip" {
            return Some(KeySource::Ip);
        }
        let (kind, name) = spec.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        match kind {
            "header" => Some(KeySource::Header(name.to_ascii_lowercase())),
            "cookie" => Some(KeySource::Cookie(name.to_string())),
            "query" => Some(KeySource::Query(name.to_string())),
            "jwt" => Some(KeySource::Claim(name.to_string())),
            _ => None,
        }
    }

    fn read<'r, R: RequestView>(&self, req: &'r R) -> Option<Cow<'r, str>> {
        match self {
            KeySource::Header(n) => req.header(n).map(Cow::Borrowed),
            KeySource::Cookie(n) => req.cookie(n),
            KeySource::Query(n) => req.query(n),
            KeySource::Ip => req.client_ip_text(),
            KeySource::Claim(n) => req.claim(n),
        }
    }
}

/// A sticky key: where to read the value that is hashed into a bucket.
pub type StickyKey = KeySource;
/// The key an override rule looks at.
pub type MatchKey = KeySource;

/// Sends requests whose key is present (and equal to `equals`, when set) to `target`.
#[derive(Debug, Clone, PartialEq)]
pub struct OverrideRule<S> {
    /// Where to look.
    pub key: MatchKey,
    /// Required value; `None` means the key only has to be present.
    pub equals: Option<String>,
    /// The slot chosen when the rule matches.
    pub target: S,
}

impl<S> OverrideRule<S> {
    fn matches<R: RequestView>(&self, req: &R) -> bool {
        match (self.key.read(req), &self.equals) {
            (Some(v), Some(want)) => v == want.as_str(),
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The splitter's decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice<'a, S> {
    /// Override rule number `rule` matched.
    Override {
        /// Index of the rule in configuration order.
        rule: usize,
        /// The rule's slot.
        target: &'a S,
    },
    /// The sticky bucket fell under the canary weight.
    Canary {
        /// The request's bucket.
        bucket: u32,
    },
    /// Stable: bucket at or above the weight, or no sticky key present (`bucket` is `None`).
    Stable {
        /// The request's bucket, when a key was present and the route has a canary weight.
        bucket: Option<u32>,
    },
}

/// The seed of a route's sticky hash.
pub fn route_seed(route_name: &str) -> u64 {
    xxh3_64(route_name.as_bytes())
}

/// The bucket (0..10,000) of a key under a route's seed.
pub fn bucket_of(seed: u64, key: &[u8]) -> u32 {
    (xxh3_64_with_seed(key, seed) % u64::from(BUCKETS)) as u32
}

/// One route's splitting rules. Immutable; the weight is passed per call because it changes at run time.
#[derive(Debug, Clone)]
pub struct Splitter<S> {
    seed: u64,
    rules: Vec<OverrideRule<S>>,
    sticky: Vec<StickyKey>,
}

impl<S> Splitter<S> {
    /// A splitter for the route `route_name`.
    pub fn new(route_name: &str, rules: Vec<OverrideRule<S>>, sticky: Vec<StickyKey>) -> Self {
        Self {
            seed: route_seed(route_name),
            rules,
            sticky,
        }
    }

    /// The override rules in order.
    pub fn rules(&self) -> &[OverrideRule<S>] {
        &self.rules
    }

    /// The bucket of this request: the first sticky key present, hashed. `None` when no key is present.
    pub fn bucket<R: RequestView>(&self, req: &R) -> Option<u32> {
        self.sticky
            .iter()
            .find_map(|k| k.read(req))
            .map(|v| bucket_of(self.seed, v.as_bytes()))
    }

    /// A 64-bit hash of the first sticky key present (rate limiting per client); `None` when absent.
    pub fn key_hash<R: RequestView>(&self, req: &R) -> Option<u64> {
        self.sticky
            .iter()
            .find_map(|k| k.read(req))
            .map(|v| xxh3_64_with_seed(v.as_bytes(), self.seed))
    }

    /// Chooses for one request. `canary_weight` is a percentage (0–100); with no canary pass 0.
    pub fn choose<R: RequestView>(&self, canary_weight: f64, req: &R) -> Choice<'_, S> {
        if let Some((rule, r)) = self.rules.iter().enumerate().find(|(_, r)| r.matches(req)) {
            return Choice::Override {
                rule,
                target: &r.target,
            };
        }
        if canary_weight <= 0.0 {
            return Choice::Stable { bucket: None };
        }
        match self.bucket(req) {
            Some(bucket) if f64::from(bucket) < canary_weight * 100.0 => Choice::Canary { bucket },
            bucket => Choice::Stable { bucket },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Default, Clone)]
    struct Req {
        headers: HashMap<String, String>,
        cookies: HashMap<String, String>,
        query: HashMap<String, String>,
        ip: Option<IpAddr>,
    }

    impl RequestView for Req {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).map(String::as_str)
        }
        fn cookie(&self, name: &str) -> Option<Cow<'_, str>> {
            self.cookies.get(name).map(|v| Cow::Borrowed(v.as_str()))
        }
        fn query(&self, name: &str) -> Option<Cow<'_, str>> {
            self.query.get(name).map(|v| Cow::Borrowed(v.as_str()))
        }
        fn client_ip(&self) -> Option<IpAddr> {
            self.ip
        }
    }

    fn user(id: &str) -> Req {
        let mut r = Req::default();
        r.headers.insert("x-user-id".into(), id.into());
        r
    }

    fn splitter(name: &str) -> Splitter<&'static str> {
        Splitter::new(
            name,
            vec![
                OverrideRule {
                    key: KeySource::parse("header:X-Gray-Enable").unwrap(),
                    equals: Some("true".into()),
                    target: "canary",
                },
                OverrideRule {
                    key: KeySource::parse("cookie:ABTEST_V2").unwrap(),
                    equals: None,
                    target: "canary",
                },
                OverrideRule {
                    key: KeySource::parse("query:stable").unwrap(),
                    equals: None,
                    target: "stable",
                },
            ],
            ["header:x-user-id", "cookie:uid", "ip"]
                .iter()
                .map(|s| KeySource::parse(s).unwrap())
                .collect(),
        )
    }

    #[test]
    fn parses_key_specs() {
        assert_eq!(
            KeySource::parse("header:X-A"),
            Some(KeySource::Header("x-a".into()))
        );
        assert_eq!(
            KeySource::parse("cookie:Uid"),
            Some(KeySource::Cookie("Uid".into()))
        );
        assert_eq!(KeySource::parse("ip"), Some(KeySource::Ip));
        assert_eq!(KeySource::parse("header:"), None);
        assert_eq!(KeySource::parse("body:x"), None);
    }

    #[test]
    fn hash_is_documented_xxh3_seeded_by_route_name() {
        // Pinned values: a change here changes every user's assignment on upgrade.
        let seed = route_seed("api");
        assert_eq!(seed, xxh3_64(b"api"));
        assert_eq!(
            bucket_of(seed, b"user-42"),
            (xxh3_64_with_seed(b"user-42", seed) % 10_000) as u32
        );
        // Reference values from Python: xxhash.xxh3_64_intdigest(key, seed=xxh3_64_intdigest(route)) % 10000
        assert_eq!(seed, 7975236179696864266);
        assert_eq!(bucket_of(route_seed("api"), b"user-42"), 2052);
        assert_eq!(bucket_of(route_seed("faces"), b"user-42"), 4444);
    }

    #[test]
    fn overrides_in_order_and_equals() {
        let s = splitter("api");
        let mut r = user("u1");
        r.headers.insert("x-gray-enable".into(), "false".into());
        assert!(
            !matches!(s.choose(0.0, &r), Choice::Override { .. }),
            "equals must match exactly"
        );
        r.headers.insert("x-gray-enable".into(), "true".into());
        assert_eq!(
            s.choose(0.0, &r),
            Choice::Override {
                rule: 0,
                target: &"canary"
            }
        );
        r.query.insert("stable".into(), "".into());
        assert_eq!(
            s.choose(100.0, &r),
            Choice::Override {
                rule: 0,
                target: &"canary"
            },
            "first rule wins"
        );
        r.headers.clear();
        assert_eq!(
            s.choose(100.0, &r),
            Choice::Override {
                rule: 2,
                target: &"stable"
            }
        );
        r.cookies.insert("ABTEST_V2".into(), "anything".into());
        assert_eq!(
            s.choose(0.0, &r),
            Choice::Override {
                rule: 1,
                target: &"canary"
            }
        );
    }

    #[test]
    fn no_key_means_stable_and_first_present_key_wins() {
        let s = splitter("api");
        assert_eq!(
            s.choose(100.0, &Req::default()),
            Choice::Stable { bucket: None }
        );
        let mut r = Req::default();
        r.cookies.insert("uid".into(), "abc".into());
        r.ip = Some("10.0.0.1".parse().unwrap());
        assert_eq!(s.bucket(&r), Some(bucket_of(route_seed("api"), b"abc")));
        r.cookies.clear();
        assert_eq!(
            s.bucket(&r),
            Some(bucket_of(route_seed("api"), b"10.0.0.1"))
        );
    }

    fn is_canary(c: Choice<'_, &str>) -> bool {
        matches!(c, Choice::Canary { .. })
    }

    proptest! {
        #[test]
        fn override_beats_any_weight(w in 0.0f64..=100.0, id in "[a-z0-9]{1,12}") {
            let s = splitter("api");
            let mut r = user(&id);
            r.headers.insert("x-gray-enable".into(), "true".into());
            prop_assert_eq!(s.choose(w, &r), Choice::Override { rule: 0, target: &"canary" });
        }

        #[test]
        fn sticky_and_identical_across_instances(w in 0.0f64..=100.0, id in "\\PC{1,40}") {
            let (a, b) = (splitter("api"), splitter("api"));
            let r = user(&id);
            let first = a.choose(w, &r);
            prop_assert_eq!(first, a.choose(w, &r));
            prop_assert_eq!(first, b.choose(w, &r));
        }

        #[test]
        fn raising_the_weight_only_adds_users(w1 in 0.0f64..=100.0, w2 in 0.0f64..=100.0, id in "[ -~]{1,24}") {
            let (lo, hi) = if w1 <= w2 { (w1, w2) } else { (w2, w1) };
            let s = splitter("api");
            let r = user(&id);
            if is_canary(s.choose(lo, &r)) {
                prop_assert!(is_canary(s.choose(hi, &r)));
            }
        }

    }

    /// 10,000 keys of two shapes (sequential ids and pseudo-random hex), and every weight from 0 to
    /// 100 in steps of 0.25: the canary share stays within ±1.5 points of the weight.
    #[test]
    fn canary_share_tracks_the_weight() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let key_sets: [Vec<String>; 2] = [
            (0..10_000).map(|i| format!("user-{i}")).collect(),
            (0..10_000)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    format!("{state:016x}")
                })
                .collect(),
        ];
        let s = splitter("api");
        for keys in &key_sets {
            let buckets: Vec<u32> = keys.iter().map(|k| s.bucket(&user(k)).unwrap()).collect();
            for step in 0..=400 {
                let w = f64::from(step) / 4.0;
                let hits = keys
                    .iter()
                    .filter(|k| is_canary(s.choose(w, &user(k))))
                    .count();
                let share = hits as f64 / 100.0;
                assert!((share - w).abs() <= 1.5, "weight {w} measured {share}");
                // choose() and bucket() agree.
                assert_eq!(
                    hits,
                    buckets
                        .iter()
                        .filter(|b| f64::from(**b) < w * 100.0)
                        .count()
                );
            }
        }
    }

    #[test]
    fn routes_split_independently() {
        let (a, b) = (splitter("faces"), splitter("speech"));
        let both = (0..10_000)
            .filter(|i| {
                let r = user(&format!("user-{i}"));
                is_canary(a.choose(20.0, &r)) && is_canary(b.choose(20.0, &r))
            })
            .count();
        // Independent 20 % splits overlap on about 4 % of users, not 20 %.
        assert!((250..=550).contains(&both), "overlap {both}");
    }
}
