//! Route lookup by host and path prefix.

/// A set of `(host, path prefix)` entries, each carrying a value of type `T`.
///
/// Matching rules:
/// * a prefix matches on segment boundaries: `/api` matches `/api`, `/api/` and `/api/v1`, not `/apix`;
///   `/` matches every path;
/// * the longest matching prefix wins; at equal length an entry with a host beats one without;
/// * a host is compared case-insensitively and without its port.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    entries: Vec<Entry<T>>,
}

#[derive(Debug, Clone)]
struct Entry<T> {
    host: Option<String>,
    prefix: String,
    value: T,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<T> RouteTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry. Trailing slashes of `prefix` are ignored (`/api/` is `/api`).
    pub fn insert(&mut self, host: Option<&str>, prefix: &str, value: T) {
        let prefix = prefix.trim_end_matches('/').to_string();
        let host = host.map(|h| h.to_ascii_lowercase());
        self.entries.push(Entry {
            host,
            prefix,
            value,
        });
        // Longest prefix first; among equals, host-specific first. Stable for equal keys.
        self.entries.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
    }

    /// Finds the entry for a request. `host` may carry a port.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&T> {
        let host = host.map(strip_port);
        self.entries
            .iter()
            .find(|e| {
                prefix_matches(&e.prefix, path)
                    && match (&e.host, host) {
                        (None, _) => true,
                        (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                        (Some(_), None) => false,
                    }
            })
            .map(|e| &e.value)
    }

    /// Iterates over the values in match order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().map(|e| &e.value)
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    // `prefix` has no trailing slash; the empty prefix is `/`.
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Removes a route's prefix from a path, keeping the result absolute (`/api/x` → `/x`, `/api` → `/`).
pub fn strip_route_prefix<'a>(prefix: &str, path: &'a str) -> std::borrow::Cow<'a, str> {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some("") => "/".into(),
        Some(rest) if rest.starts_with('/') => rest.into(),
        _ => path.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable<&'static str> {
        let mut t = RouteTable::new();
        t.insert(None, "/", "root");
        t.insert(None, "/api", "api");
        t.insert(None, "/api/v2/", "v2");
        t.insert(Some("Example.com"), "/api", "api-example");
        t
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let t = table();
        assert_eq!(t.find(None, "/api"), Some(&"api"));
        assert_eq!(t.find(None, "/api/"), Some(&"api"));
        assert_eq!(t.find(None, "/api/users"), Some(&"api"));
        assert_eq!(t.find(None, "/apix"), Some(&"root"));
        assert_eq!(t.find(None, "/api/v2"), Some(&"v2"));
        assert_eq!(t.find(None, "/api/v2/x"), Some(&"v2"));
        assert_eq!(t.find(None, "/api/v20"), Some(&"api"));
        assert_eq!(t.find(None, "/"), Some(&"root"));
        assert_eq!(t.find(None, "/other"), Some(&"root"));
    }

    #[test]
    fn host_specific_entries_win_at_equal_length() {
        let t = table();
        assert_eq!(
            t.find(Some("example.com:8080"), "/api/x"),
            Some(&"api-example")
        );
        assert_eq!(t.find(Some("EXAMPLE.COM"), "/api"), Some(&"api-example"));
        assert_eq!(t.find(Some("other.com"), "/api"), Some(&"api"));
        // A longer hostless prefix still beats a shorter host-specific one.
        assert_eq!(t.find(Some("example.com"), "/api/v2/x"), Some(&"v2"));
    }

    #[test]
    fn no_match_without_root() {
        let mut t = RouteTable::new();
        t.insert(None, "/api", 1);
        assert_eq!(t.find(None, "/"), None);
        assert_eq!(t.find(None, "/ap"), None);
    }

    #[test]
    fn strip_prefix_keeps_paths_absolute() {
        assert_eq!(strip_route_prefix("/api", "/api/x/y"), "/x/y");
        assert_eq!(strip_route_prefix("/api/", "/api"), "/");
        assert_eq!(strip_route_prefix("/", "/x"), "/x");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("host"), "host");
    }
}
