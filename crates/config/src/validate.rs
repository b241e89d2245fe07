//! Semantic checks that serde cannot express. Each problem carries the path of the offending value
//! so the caller can turn it into a line number.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

use crate::{AuthMode, Config, Seg, SlotKind};

type Found = Vec<(Vec<Seg>, String)>;

/// The largest CenterFace `max_side` a face slot accepts.
pub const MAX_SIDE_LIMIT: u32 = 8192;

/// The most BlazeFace tiles per run a face slot accepts (256 tiles are a 201 MB input).
pub const MAX_TILE_BATCH: usize = 256;

/// Why `device` is not a device name (`cpu`, `cuda` or `cuda:N`), if it is not.
fn device_problem(device: &str) -> Option<String> {
    let cuda_ok = device
        .strip_prefix("cuda:")
        .is_some_and(|n| n.parse::<u32>().is_ok());
    (device != "cpu" && device != "cuda" && !cuda_ok)
        .then(|| format!("device `{device}` is not `cpu` or `cuda:N`"))
}

macro_rules! path {
    ($($seg:expr),* $(,)?) => { vec![$(Seg::from($seg)),*] };
}

/// Slot and route names: letters, digits, `.`, `_`, `-` (they appear in URLs and metric labels).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses a sticky key spec (`header:NAME`, `cookie:NAME`, `query:NAME`, `ip`), returning a
/// message when it is malformed.
pub fn check_sticky(spec: &str) -> Result<(), String> {
    if spec == "ip" {
        return Ok(());
    }
    match spec.split_once(':') {
        Some(("header" | "cookie" | "query", name)) if !name.is_empty() => {
            if name
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                Err(format!(
                    "sticky key `{spec}` has a blank or control character in its name"
                ))
            } else {
                Ok(())
            }
        }
        _ => Err(format!(
            "sticky key `{spec}` is not one of `header:NAME`, `cookie:NAME`, `query:NAME`, `ip`"
        )),
    }
}

pub(crate) fn validate(cfg: &Config, base_dir: Option<&Path>) -> Found {
    let mut out: Found = Vec::new();
    check_addr(&cfg.server.listen, path!["server", "listen"], &mut out);
    check_addr(&cfg.admin.listen, path!["admin", "listen"], &mut out);
    if cfg.server.max_header_bytes < 1024 {
        out.push((
            path!["server", "max_header_bytes"],
            "must be at least 1024".into(),
        ));
    }
    if cfg.server.idle_poll_us.is_some_and(|us| us > 10_000) {
        out.push((
            path!["server", "idle_poll_us"],
            "must be at most 10000 (10 ms); 0 turns idle polling off".into(),
        ));
    }
    for (key, v) in [
        ("header_read_timeout_ms", cfg.server.header_read_timeout_ms),
        ("request_timeout_ms", cfg.server.request_timeout_ms),
        ("idle_timeout_ms", cfg.server.idle_timeout_ms),
    ] {
        if v == 0 {
            out.push((path!["server", key], "must be greater than 0".into()));
        }
    }
    if let Some(url) = &cfg.log.otlp_endpoint
        && !(url.starts_with("http://") && url.len() > "http://".len())
    {
        out.push((
            path!["log", "otlp_endpoint"],
            format!("`{url}` is not an http:// URL (the OTLP exporter speaks plain HTTP to a collector beside the gateway)"),
        ));
    }
    if let Some(tls) = &cfg.server.tls {
        for (key, file) in [("cert", &tls.cert), ("key", &tls.key)] {
            check_file(base_dir, Some(file), path!["server", "tls", key], &mut out);
        }
    }
    if let Some(tls) = &cfg.admin.tls {
        for (key, file) in [
            ("cert", Some(&tls.cert)),
            ("key", Some(&tls.key)),
            ("client_ca", tls.client_ca.as_ref()),
        ] {
            check_file(base_dir, file, path!["admin", "tls", key], &mut out);
        }
    }
    match (&cfg.admin.token, &cfg.admin.token_env) {
        (Some(_), Some(_)) => out.push((
            path!["admin", "token_env"],
            "set `token` or `token_env`, not both".into(),
        )),
        (Some(t), None) if t.is_empty() => {
            out.push((path!["admin", "token"], "token must not be empty".into()))
        }
        (None, Some(var)) if std::env::var(var).map(|v| v.is_empty()).unwrap_or(true) => {
            out.push((
                path!["admin", "token_env"],
                format!("environment variable `{var}` is not set or empty"),
            ))
        }
        _ => {}
    }

    if let Some(h) = &cfg.history {
        if h.path.is_empty() {
            out.push((path!["history", "path"], "must not be empty".into()));
        }
        if h.max_rows == 0 {
            out.push((
                path!["history", "max_rows"],
                "must be greater than 0".into(),
            ));
        }
    }

    if !matches!(cfg.engine.default.as_str(), "auto" | "ort" | "tract") {
        out.push((
            path!["engine", "default"],
            format!(
                "engine `{}` is not one of auto, ort, tract",
                cfg.engine.default
            ),
        ));
    }
    if let Some(problem) = device_problem(&cfg.engine.device) {
        out.push((path!["engine", "device"], problem));
    }
    if !matches!(
        cfg.engine.cuda_conv_search.as_str(),
        "heuristic" | "exhaustive" | "default"
    ) {
        out.push((
            path!["engine", "cuda_conv_search"],
            format!(
                "`{}` is not one of heuristic, exhaustive, default",
                cfg.engine.cuda_conv_search
            ),
        ));
    }
    if cfg.engine.cuda_sessions == 0 {
        out.push((
            path!["engine", "cuda_sessions"],
            "must be at least 1".into(),
        ));
    }
    if !cfg.engine.ort_library.is_empty() && !resolve(base_dir, &cfg.engine.ort_library).is_file() {
        out.push((
            path!["engine", "ort_library"],
            format!("file `{}` does not exist", cfg.engine.ort_library),
        ));
    }

    let mut slot_kinds: HashMap<&str, SlotKind> = HashMap::new();
    for (i, slot) in cfg.slots.iter().enumerate() {
        if !valid_name(&slot.name) {
            out.push((
                path!["slot", i, "name"],
                format!(
                    "slot name `{}` must be 1–64 of letters, digits, `.`, `_`, `-`",
                    slot.name
                ),
            ));
        }
        if slot_kinds.insert(&slot.name, slot.kind).is_some() {
            out.push((
                path!["slot", i, "name"],
                format!("duplicate slot name `{}`", slot.name),
            ));
        }
        for field in slot.foreign_fields() {
            out.push((
                path!["slot", i, field],
                format!(
                    "`{field}` does not apply to a slot of kind `{}`",
                    slot.kind.as_str()
                ),
            ));
        }
        match slot.kind {
            SlotKind::Upstream => match &slot.url {
                None => out.push((path!["slot", i], "an upstream slot needs `url`".into())),
                Some(url) => {
                    if let Err(msg) = check_upstream_url(url) {
                        out.push((path!["slot", i, "url"], msg));
                    }
                }
            },
            SlotKind::Face => {
                match slot.detector.as_deref() {
                    None => out.push((path!["slot", i], "a face slot needs `detector`".into())),
                    Some("blazeface-front" | "blazeface-back" | "centerface") => {}
                    Some(d) => out.push((
                        path!["slot", i, "detector"],
                        format!("detector `{d}` is not one of blazeface-front, blazeface-back, centerface"),
                    )),
                }
                match slot.model.as_deref() {
                    None => out.push((path!["slot", i], "a face slot needs `model`".into())),
                    Some(m) if !resolve(base_dir, m).is_file() => out.push((
                        path!["slot", i, "model"],
                        format!("model file `{m}` does not exist"),
                    )),
                    Some(_) => {}
                }
                for (key, v) in [
                    ("score_threshold", slot.score_threshold),
                    ("nms_iou", slot.nms_iou),
                ] {
                    if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                        out.push((path!["slot", i, key], "must be between 0 and 1".into()));
                    }
                }
                for (key, v) in [
                    ("min_tile", slot.min_tile.map(u64::from)),
                    ("max_side", slot.max_side.map(u64::from)),
                    ("max_pixels", slot.max_pixels),
                ] {
                    if v == Some(0) {
                        out.push((path!["slot", i, key], "must be greater than 0".into()));
                    }
                }
                // With `fixed_shape` (the default on a GPU) every photo runs at `max_side` square,
                // whatever its size: 8192 is already a 805 MB input.
                if slot
                    .tile_batch
                    .is_some_and(|v| !(1..=MAX_TILE_BATCH).contains(&v))
                {
                    out.push((
                        path!["slot", i, "tile_batch"],
                        format!("must be between 1 and {MAX_TILE_BATCH}"),
                    ));
                }
                if slot.max_side.is_some_and(|v| v > MAX_SIDE_LIMIT) {
                    out.push((
                        path!["slot", i, "max_side"],
                        format!("must be at most {MAX_SIDE_LIMIT}"),
                    ));
                }
            }
            SlotKind::Asr => {
                match slot.family.as_deref() {
                    None | Some("transducer") => {}
                    Some(f) => out.push((
                        path!["slot", i, "family"],
                        format!("family `{f}` is not supported (only `transducer`)"),
                    )),
                }
                match slot.model_dir.as_deref() {
                    None => out.push((path!["slot", i], "an asr slot needs `model_dir`".into())),
                    Some(d) if !resolve(base_dir, d).is_dir() => out.push((
                        path!["slot", i, "model_dir"],
                        format!("model folder `{d}` does not exist"),
                    )),
                    Some(_) => {}
                }
                // The same names and range as `switchyard_speech::Decoding::from_name`, checked here
                // too so that `switchyard check` reports them with their line.
                match slot.decoding_method.as_deref() {
                    None | Some("greedy_search" | "modified_beam_search") => {}
                    Some(m) => out.push((
                        path!["slot", i, "decoding_method"],
                        format!(
                            "decoding method `{m}` is not one of greedy_search, modified_beam_search"
                        ),
                    )),
                }
                // The names of `switchyard_speech::audio::Channels::from_name`.
                if let Some(c) = slot.channels.as_deref()
                    && !matches!(c, "mix" | "split")
                {
                    out.push((
                        path!["slot", i, "channels"],
                        format!("channels `{c}` is not one of mix, split"),
                    ));
                }
                if let Some(p) = slot.max_active_paths
                    && !(1..=64).contains(&p)
                {
                    out.push((
                        path!["slot", i, "max_active_paths"],
                        "must be between 1 and 64".into(),
                    ));
                }
                if let Some(v) = slot.vad.as_deref()
                    && !resolve(base_dir, v).is_file()
                {
                    out.push((
                        path!["slot", i, "vad"],
                        format!("VAD model file `{v}` does not exist"),
                    ));
                }
                if let Some(s) = slot.max_audio_seconds
                    && !(s > 0.0 && s <= 86_400.0)
                {
                    out.push((
                        path!["slot", i, "max_audio_seconds"],
                        "must be between 0 and 86400".into(),
                    ));
                }
                for (key, v) in [
                    (
                        "batch_concurrency",
                        slot.batch_concurrency.map(|v| v as u64),
                    ),
                    ("stream_idle_timeout_ms", slot.stream_idle_timeout_ms),
                    ("endpoint_silence_ms", slot.endpoint_silence_ms),
                ] {
                    if v == Some(0) {
                        out.push((path!["slot", i, key], "must be greater than 0".into()));
                    }
                }
            }
            SlotKind::Static => {
                if let Some(status) = slot.status
                    && http::StatusCode::from_u16(status).is_err()
                {
                    out.push((
                        path!["slot", i, "status"],
                        format!("{status} is not an HTTP status"),
                    ));
                }
            }
        }
        if let Some(problem) = slot.device.as_deref().and_then(device_problem) {
            out.push((path!["slot", i, "device"], problem));
        }
        if let Some(e) = slot.engine.as_deref()
            && !matches!(e, "auto" | "ort" | "tract")
        {
            out.push((
                path!["slot", i, "engine"],
                format!("engine `{e}` is not one of auto, ort, tract"),
            ));
        }
        for (key, v) in [
            ("max_concurrency", slot.max_concurrency.map(|v| v as u64)),
            ("sessions", slot.sessions.map(|v| v as u64)),
        ] {
            if v == Some(0) {
                out.push((path!["slot", i, key], "must be greater than 0".into()));
            }
        }
        for (key, v) in [
            ("timeout_ms", slot.timeout_ms),
            ("connect_timeout_ms", slot.connect_timeout_ms),
        ] {
            if v == Some(0) {
                out.push((path!["slot", i, key], "must be greater than 0".into()));
            }
        }
    }

    let mut route_names = HashSet::new();
    let mut route_keys = HashSet::new();
    let slot_known = |name: &str| slot_kinds.contains_key(name);
    for (i, route) in cfg.routes.iter().enumerate() {
        if !valid_name(&route.name) {
            out.push((
                path!["route", i, "name"],
                format!(
                    "route name `{}` must be 1–64 of letters, digits, `.`, `_`, `-`",
                    route.name
                ),
            ));
        }
        if !route_names.insert(route.name.as_str()) {
            out.push((
                path!["route", i, "name"],
                format!("duplicate route name `{}`", route.name),
            ));
        }
        if !route.path.starts_with('/') {
            out.push((
                path!["route", i, "path"],
                format!("path `{}` must start with `/`", route.path),
            ));
        }
        let host = route.host.as_deref().map(str::to_ascii_lowercase);
        let norm_path = route.path.trim_end_matches('/').to_string();
        if !route_keys.insert((host, norm_path)) {
            out.push((
                path!["route", i, "path"],
                format!(
                    "another route already has path `{}` for the same host",
                    route.path
                ),
            ));
        }
        let blue_green = route.blue.is_some() || route.green.is_some() || route.active.is_some();
        if blue_green {
            match (&route.blue, &route.green, route.active.as_deref()) {
                (Some(b), Some(g), Some(active @ ("blue" | "green"))) => {
                    for (key, slot) in [("blue", b), ("green", g)] {
                        if !slot_known(slot) {
                            out.push((path!["route", i, key], format!("unknown slot `{slot}`")));
                        }
                    }
                    if b == g {
                        out.push((
                            path!["route", i, "green"],
                            "green must differ from blue".into(),
                        ));
                    }
                    let active_slot = if active == "blue" { b } else { g };
                    if !route.stable.is_empty() && route.stable != *active_slot {
                        out.push((
                            path!["route", i, "stable"],
                            "with blue/green, leave `stable` out: `active` chooses it".into(),
                        ));
                    }
                }
                (_, _, Some(a)) if a != "blue" && a != "green" => out.push((
                    path!["route", i, "active"],
                    format!("active `{a}` must be `blue` or `green`"),
                )),
                _ => out.push((
                    path!["route", i],
                    "blue-green needs `blue`, `green` and `active`".into(),
                )),
            }
            if route.canary.is_some() {
                out.push((
                    path!["route", i, "canary"],
                    "a blue-green route has no canary".into(),
                ));
            }
        } else if route.stable.is_empty() {
            out.push((path!["route", i], "a route needs `stable`".into()));
        } else if !slot_known(&route.stable) {
            out.push((
                path!["route", i, "stable"],
                format!("unknown slot `{}`", route.stable),
            ));
        }
        let needs_canary = |key: &str, out: &mut Found| {
            if route.canary.is_none() {
                out.push((
                    path!["route", i, key],
                    format!("`[route.{key}]` needs a `canary` on the route"),
                ));
            }
        };
        if let Some(f) = &route.fallback {
            needs_canary("fallback", &mut out);
            if f.hedge_after_ms > 0 && f.timeout_ms > 0 && f.hedge_after_ms >= f.timeout_ms {
                out.push((
                    path!["route", i, "fallback", "hedge_after_ms"],
                    "must be shorter than timeout_ms".into(),
                ));
            }
        }
        if let Some(b) = &route.breaker {
            needs_canary("breaker", &mut out);
            if !(1..=60).contains(&b.window_s) {
                out.push((
                    path!["route", i, "breaker", "window_s"],
                    "must be 1–60".into(),
                ));
            }
            if !(0.0..=1.0).contains(&b.max_error_rate) {
                out.push((
                    path!["route", i, "breaker", "max_error_rate"],
                    "must be 0–1".into(),
                ));
            }
            if !(b.probe_percent > 0.0 && b.probe_percent <= 100.0) {
                out.push((
                    path!["route", i, "breaker", "probe_percent"],
                    "must be in (0, 100]".into(),
                ));
            }
            for (key, v) in [
                ("min_requests", b.min_requests),
                ("cooldown_s", b.cooldown_s),
                ("probe_successes", b.probe_successes),
            ] {
                if v == 0 {
                    out.push((
                        path!["route", i, "breaker", key],
                        "must be greater than 0".into(),
                    ));
                }
            }
        }
        if let Some(r) = &route.ramp {
            needs_canary("ramp", &mut out);
            let increasing = r.steps.windows(2).all(|w| w[0] < w[1]);
            if r.steps.is_empty()
                || !increasing
                || r.steps.iter().any(|s| !(*s > 0.0 && *s <= 100.0))
                || r.steps.last() != Some(&100.0)
            {
                out.push((
                    path!["route", i, "ramp", "steps"],
                    "steps must increase within (0, 100] and end at 100".into(),
                ));
            }
            if r.interval_s == 0 {
                out.push((
                    path!["route", i, "ramp", "interval_s"],
                    "must be greater than 0".into(),
                ));
            }
            for (key, v) in [
                ("max_error_rate", r.max_error_rate),
                ("min_face_f1", r.min_face_f1),
                ("max_wer", r.max_wer),
                ("min_match_rate", r.min_match_rate),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    out.push((path!["route", i, "ramp", key], "must be 0–1".into()));
                }
            }
        }
        if let Some(rl) = &route.rate_limit {
            if !(rl.requests_per_s > 0.0 && rl.requests_per_s.is_finite()) {
                out.push((
                    path!["route", i, "rate_limit", "requests_per_s"],
                    "must be greater than 0".into(),
                ));
            }
            if rl.burst == 0 {
                out.push((
                    path!["route", i, "rate_limit", "burst"],
                    "must be at least 1".into(),
                ));
            }
            if rl.key != "sticky" && rl.key != "ip" {
                out.push((
                    path!["route", i, "rate_limit", "key"],
                    format!("key `{}` must be `sticky` or `ip`", rl.key),
                ));
            }
        }
        if let Some(sh) = &route.shadow {
            needs_canary("shadow", &mut out);
            if !(0.0..=100.0).contains(&sh.percent) {
                out.push((
                    path!["route", i, "shadow", "percent"],
                    "must be 0–100".into(),
                ));
            }
            if sh.max_concurrency == 0 {
                out.push((
                    path!["route", i, "shadow", "max_concurrency"],
                    "must be greater than 0".into(),
                ));
            }
        }
        match &route.canary {
            Some(c) if !slot_known(c) => {
                out.push((path!["route", i, "canary"], format!("unknown slot `{c}`")))
            }
            Some(c) if *c == route.stable => out.push((
                path!["route", i, "canary"],
                "canary must differ from stable".into(),
            )),
            _ => {}
        }
        let w = route.canary_weight;
        if !(0.0..=100.0).contains(&w) || !w.is_finite() {
            out.push((
                path!["route", i, "canary_weight"],
                format!("canary_weight {w} is outside 0–100"),
            ));
        } else if w > 0.0 && route.canary.is_none() {
            out.push((
                path!["route", i, "canary_weight"],
                "canary_weight is set but the route has no `canary`".into(),
            ));
        }
        for (j, key) in route.sticky.iter().enumerate() {
            match key.strip_prefix("jwt:") {
                Some("") => out.push((
                    path!["route", i, "sticky", j],
                    "`jwt:` needs a claim name".into(),
                )),
                Some(_) if route.auth != AuthMode::Jwt => out.push((
                    path!["route", i, "sticky", j],
                    format!("sticky key `{key}` needs `auth = \"jwt\"` on this route"),
                )),
                Some(_) => {}
                None => {
                    if let Err(msg) = check_sticky(key) {
                        out.push((path!["route", i, "sticky", j], msg));
                    }
                }
            }
        }
        check_auth(route, i, base_dir, &mut out);
        if let Some(c) = &route.cache {
            if c.max_bytes == 0 {
                out.push((
                    path!["route", i, "cache", "max_bytes"],
                    "must be greater than 0".into(),
                ));
            }
            if c.max_entry_bytes == 0 || c.max_entry_bytes > c.max_bytes {
                out.push((
                    path!["route", i, "cache", "max_entry_bytes"],
                    "must be greater than 0 and at most `max_bytes`".into(),
                ));
            }
            if c.ttl_s == 0 {
                out.push((
                    path!["route", i, "cache", "ttl_s"],
                    "must be greater than 0".into(),
                ));
            }
            for (j, h) in c.options_headers.iter().enumerate() {
                if http_token(h).is_none() {
                    out.push((
                        path!["route", i, "cache", "options_headers", j],
                        format!("`{h}` is not a header name"),
                    ));
                }
            }
        }
        if route.max_body_bytes == Some(0) {
            out.push((
                path!["route", i, "max_body_bytes"],
                "must be greater than 0".into(),
            ));
        }
        for (j, m) in route.matches.iter().enumerate() {
            let keys = [&m.header, &m.cookie, &m.query]
                .iter()
                .filter(|k| k.is_some())
                .count();
            if keys != 1 {
                out.push((
                    path!["route", i, "match", j],
                    "a match needs exactly one of `header`, `cookie`, `query`".into(),
                ));
            }
            if let Some(h) = &m.header
                && http::HeaderName::from_bytes(h.as_bytes()).is_err()
            {
                out.push((
                    path!["route", i, "match", j, "header"],
                    format!("`{h}` is not a header name"),
                ));
            }
            if !slot_known(&m.slot) {
                out.push((
                    path!["route", i, "match", j, "slot"],
                    format!("unknown slot `{}`", m.slot),
                ));
            }
        }
    }
    out
}

/// A required file: present in the config and existing on disk.
fn check_file(base_dir: Option<&Path>, file: Option<&String>, at: Vec<Seg>, out: &mut Found) {
    match file {
        None => out.push((at, "a file is required here".into())),
        Some(f) if f.is_empty() => out.push((at, "a file is required here".into())),
        Some(f) if !resolve(base_dir, f).is_file() => {
            out.push((at, format!("file `{f}` does not exist")))
        }
        Some(_) => {}
    }
}

/// A header name: 1–64 token characters.
fn http_token(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then_some(name)
}

/// `auth` and its `[route.bearer]` / `[route.jwt]` section.
fn check_auth(route: &crate::RouteSpec, i: usize, base_dir: Option<&Path>, out: &mut Found) {
    let env_set = |var: &str| std::env::var(var).is_ok_and(|v| !v.trim().is_empty());
    match route.auth {
        AuthMode::None => {
            if route.bearer.is_some() || route.jwt.is_some() {
                out.push((
                    path!["route", i, "auth"],
                    "a `bearer` or `jwt` section is set but `auth` is \"none\"".into(),
                ));
            }
        }
        AuthMode::Bearer => match &route.bearer {
            None => out.push((
                path!["route", i, "bearer"],
                "`auth = \"bearer\"` needs a [route.bearer] section".into(),
            )),
            Some(b) => {
                if b.tokens.iter().any(|t| t.trim().is_empty()) {
                    out.push((
                        path!["route", i, "bearer", "tokens"],
                        "tokens must not be blank".into(),
                    ));
                }
                if let Some(var) = &b.tokens_env
                    && !env_set(var)
                {
                    out.push((
                        path!["route", i, "bearer", "tokens_env"],
                        format!("environment variable `{var}` is not set or empty"),
                    ));
                }
                if let Some(f) = &b.tokens_file {
                    check_file(
                        base_dir,
                        Some(f),
                        path!["route", i, "bearer", "tokens_file"],
                        out,
                    );
                }
                if b.tokens.is_empty() && b.tokens_env.is_none() && b.tokens_file.is_none() {
                    out.push((
                        path!["route", i, "bearer"],
                        "set `tokens`, `tokens_env` or `tokens_file`".into(),
                    ));
                }
            }
        },
        AuthMode::Jwt => match &route.jwt {
            None => out.push((
                path!["route", i, "jwt"],
                "`auth = \"jwt\"` needs a [route.jwt] section".into(),
            )),
            Some(j) => {
                let sources = [
                    j.secret.is_some(),
                    j.secret_env.is_some(),
                    j.public_key.is_some(),
                    j.jwks.is_some(),
                ];
                if sources.iter().filter(|s| **s).count() != 1 {
                    out.push((
                        path!["route", i, "jwt"],
                        "set exactly one of `secret`, `secret_env`, `public_key`, `jwks`".into(),
                    ));
                }
                if let Some(s) = &j.secret
                    && s.len() < 32
                {
                    out.push((
                        path!["route", i, "jwt", "secret"],
                        "an HS256 secret must be at least 32 bytes".into(),
                    ));
                }
                if let Some(var) = &j.secret_env
                    && !env_set(var)
                {
                    out.push((
                        path!["route", i, "jwt", "secret_env"],
                        format!("environment variable `{var}` is not set or empty"),
                    ));
                }
                for (key, f) in [("public_key", &j.public_key), ("jwks", &j.jwks)] {
                    if f.is_some() {
                        check_file(base_dir, f.as_ref(), path!["route", i, "jwt", key], out);
                    }
                }
            }
        },
    }
}

/// A path from the configuration: as given if it exists (absolute, or relative to the working
/// directory), else relative to the configuration file's folder.
pub fn resolve(base_dir: Option<&Path>, file: &str) -> std::path::PathBuf {
    let p = Path::new(file);
    match base_dir {
        Some(dir) if p.is_relative() && !p.exists() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

fn check_addr(addr: &str, path: Vec<Seg>, out: &mut Found) {
    if addr.parse::<SocketAddr>().is_err() {
        out.push((
            path,
            format!("`{addr}` is not an address of the form ip:port"),
        ));
    }
}

/// Checks an upstream base URL: http or https, with a host, no query or fragment.
pub fn check_upstream_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("`{url}` must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("`{url}` must not have a query string"));
    }
    Ok(())
}
