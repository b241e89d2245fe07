use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"

[[slot]]
name = "api-v1"
kind = "upstream"
url = "http://127.0.0.1:7001"
version = "1.0"

[[slot]]
name = "api-v2"
kind = "upstream"
url = "http://127.0.0.1:7002"
version = "2.0"

[[route]]
name = "api"
path = "/api"
stable = "api-v1"
canary = "api-v2"
canary_weight = 5.5
sticky = ["header:x-user-id", "cookie:uid", "ip"]

[[route.match]]
header = "x-gray-enable"
equals = "true"
slot = "api-v2"
"#;

#[test]
fn good_file_loads_with_defaults() {
    let cfg = load_str(GOOD).expect("valid");
    assert_eq!(cfg.slots.len(), 2);
    assert_eq!(cfg.routes[0].canary_weight, 5.5);
    assert_eq!(
        cfg.routes[0].matches[0].header.as_deref(),
        Some("x-gray-enable")
    );
    assert_eq!(cfg.admin.listen, "127.0.0.1:9901");
    assert_eq!(cfg.server.max_body_bytes, 32 * 1024 * 1024);
    assert!(!cfg.routes[0].strip_prefix);
}

#[test]
fn default_config_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cfg = load_named(DEFAULT_CONFIG, "<embedded default>", Some(&root))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.routes.iter().any(|r| r.path == "/"));
    assert!(cfg.slots.iter().any(|s| s.kind == SlotKind::Face));
}

#[test]
fn shipped_example_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = 0;
    for dir in ["config", "deploy/docker"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                // Model paths in shipped files are relative to the repository root (where `make run` runs).
                let text = std::fs::read_to_string(&path).unwrap();
                load_named(&text, &path.display().to_string(), Some(&root))
                    .unwrap_or_else(|e| panic!("{e}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 3, "{checked} files checked");
}

fn problems(text: &str) -> Vec<String> {
    load_named(text, "f.toml", None)
        .expect_err("must fail")
        .to_string()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn engine_cuda_settings_default_and_are_checked() {
    let cfg = load_str(GOOD).expect("valid");
    assert_eq!(cfg.engine.cuda_conv_search, "heuristic");
    assert_eq!(cfg.engine.cuda_sessions, 1);
    let text = "[engine]\ndevice = \"cuda:0\"\ncuda_conv_search = \"fast\"\ncuda_sessions = 0\n";
    let got = problems(text);
    assert_eq!(
        got,
        [
            "f.toml:3: `fast` is not one of heuristic, exhaustive, default",
            "f.toml:4: must be at least 1",
        ],
        "{got:#?}"
    );
}

#[test]
fn a_max_side_beyond_the_limit_is_refused() {
    let text = "[[slot]]\nname = \"f\"\nkind = \"face\"\ndetector = \"centerface\"\nmodel = \"Cargo.toml\"\nmax_side = 100000\n";
    let got = problems(text);
    assert!(
        got.iter().any(|g| g == "f.toml:6: must be at most 8192"),
        "{got:#?}"
    );
}

#[test]
fn idle_polling_is_unset_by_default_and_its_window_is_bounded() {
    let cfg = load_str(GOOD).expect("valid");
    assert_eq!(cfg.server.idle_poll_us, None);
    let off = load_str("[server]\nidle_poll_us = 0\n").expect("0 turns it off");
    assert_eq!(off.server.idle_poll_us, Some(0));
    load_str("[server]\nidle_poll_us = 10000\n").expect("the largest window");
    let got = problems("[server]\nlisten = \"127.0.0.1:8080\"\nidle_poll_us = 10001\n");
    assert_eq!(
        got,
        ["f.toml:3: must be at most 10000 (10 ms); 0 turns idle polling off"],
        "{got:#?}"
    );
}

#[test]
fn a_tile_batch_outside_its_range_is_refused() {
    let slot = "[[slot]]\nname = \"f\"\nkind = \"face\"\ndetector = \"blazeface-back\"\nmodel = \"Cargo.toml\"\n";
    for bad in [0, 257] {
        let got = problems(&format!("{slot}tile_batch = {bad}\n"));
        assert!(
            got.iter()
                .any(|g| g == "f.toml:6: must be between 1 and 256"),
            "{bad}: {got:#?}"
        );
    }
    load_named(&format!("{slot}tile_batch = 32\n"), "f.toml", None).expect("valid");
    // Not a key of other slot kinds.
    let got = problems(
        "[[slot]]\nname = \"u\"\nkind = \"upstream\"\nurl = \"http://127.0.0.1:1\"\ntile_batch = 4\n",
    );
    assert!(got.iter().any(|g| g.contains("tile_batch")), "{got:#?}");
}

#[test]
fn a_slot_device_is_checked_like_the_engine_device() {
    let slot = "[[slot]]\nname = \"f\"\nkind = \"face\"\ndetector = \"blazeface-back\"\nmodel = \"Cargo.toml\"\n";
    let got = problems(&format!("{slot}device = \"gpu\"\n"));
    assert!(
        got.iter()
            .any(|g| g == "f.toml:6: device `gpu` is not `cpu` or `cuda:N`"),
        "{got:#?}"
    );
    for good in ["cpu", "cuda:1"] {
        let cfg = load_named(&format!("{slot}device = \"{good}\"\n"), "f.toml", None).expect(good);
        assert_eq!(cfg.slots[0].device.as_deref(), Some(good));
    }
    let got = problems(
        "[[slot]]\nname = \"u\"\nkind = \"upstream\"\nurl = \"http://127.0.0.1:1\"\ndevice = \"cpu\"\n",
    );
    assert!(got.iter().any(|g| g.contains("device")), "{got:#?}");
}

#[test]
fn every_problem_is_listed_with_its_line() {
    let text = r#"[server]
listen = "nonsense"
colour = "blue"

[[slot]]
name = "a"
kind = "upstream"
url = "ftp://x"

[[slot]]
name = "a"
kind = "static"
url = "http://127.0.0.1:1"

[[route]]
name = "r"
path = "api"
stable = "missing"
canary = "a"
canary_weight = 150
sticky = ["header:", "bogus"]

[[route.match]]
header = "x"
cookie = "y"
slot = "nope"
"#;
    let got = problems(text);
    let want = [
        "f.toml:2: `nonsense` is not an address of the form ip:port",
        "f.toml:3: unknown key `server.colour`",
        "f.toml:8: `ftp://x` must start with http:// or https://",
        "f.toml:11: duplicate slot name `a`",
        "f.toml:13: `url` does not apply to a slot of kind `static`",
        "f.toml:17: path `api` must start with `/`",
        "f.toml:18: unknown slot `missing`",
        "f.toml:20: canary_weight 150 is outside 0–100",
        "f.toml:21: sticky key `header:` is not one of `header:NAME`, `cookie:NAME`, `query:NAME`, `ip`",
        "f.toml:21: sticky key `bogus` is not one of `header:NAME`, `cookie:NAME`, `query:NAME`, `ip`",
        "f.toml:23: a match needs exactly one of `header`, `cookie`, `query`",
        "f.toml:26: unknown slot `nope`",
    ];
    for w in want {
        assert!(got.iter().any(|g| g == w), "missing {w:?} in {got:#?}");
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
}

#[test]
fn asr_decoding_settings_are_checked() {
    let got = problems(
        r#"[[slot]]
name = "a"
kind = "asr"
model_dir = "."
decoding_method = "beam"
max_active_paths = 0
channels = "stereo"

[[slot]]
name = "b"
kind = "face"
decoding_method = "greedy_search"
channels = "split"
"#,
    );
    for w in [
        "f.toml:5: decoding method `beam` is not one of greedy_search, modified_beam_search",
        "f.toml:6: must be between 1 and 64",
        "f.toml:7: channels `stereo` is not one of mix, split",
        "f.toml:12: `decoding_method` does not apply to a slot of kind `face`",
        "f.toml:13: `channels` does not apply to a slot of kind `face`",
    ] {
        assert!(got.iter().any(|g| g == w), "missing {w:?} in {got:#?}");
    }
}

#[test]
fn syntax_and_type_errors_have_lines() {
    let got = problems("[server]\nlisten = \"127.0.0.1:1\"\nmax_body_bytes = \"big\"\n");
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("f.toml:3: "), "{got:?}");
    let got = problems("[server\nlisten = 1\n");
    assert!(got[0].starts_with("f.toml:1: "), "{got:?}");
}

#[test]
fn weight_without_canary_and_self_canary_are_rejected() {
    let text = r#"
[[slot]]
name = "a"
kind = "static"

[[route]]
name = "r"
path = "/"
stable = "a"
canary_weight = 10

[[route]]
name = "q"
path = "/q"
stable = "a"
canary = "a"
"#;
    let got = problems(text);
    assert!(
        got.contains(&"f.toml:10: canary_weight is set but the route has no `canary`".to_string()),
        "{got:?}"
    );
    assert!(
        got.contains(&"f.toml:16: canary must differ from stable".to_string()),
        "{got:?}"
    );
}

#[test]
fn duplicate_route_paths_are_rejected_per_host() {
    let text = r#"
[[slot]]
name = "a"
kind = "static"

[[route]]
name = "one"
path = "/x"
stable = "a"

[[route]]
name = "two"
path = "/x/"
stable = "a"

[[route]]
name = "three"
path = "/x"
host = "example.com"
stable = "a"
"#;
    let got = problems(text);
    assert_eq!(
        got,
        vec!["f.toml:13: another route already has path `/x/` for the same host"]
    );
}

#[test]
fn missing_file_is_reported() {
    let err = load_file(Path::new("/nonexistent/switchyard.toml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/switchyard.toml: cannot read the file")
    );
}

#[test]
fn tls_files_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "x").unwrap();
    let text = "[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n";
    let err = load_named(text, "f.toml", Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "f.toml:3: file `key.pem` does not exist");
}
