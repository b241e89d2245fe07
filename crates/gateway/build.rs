//! Embeds the built web console (`web/dist`, made by `npm run build` in `web/`, which `make setup`
//! runs) into the binary. Without it the binary still builds; `/ui/` then says how to build it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let dist = manifest.join("../../web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        collect(&dist, &dist, &mut files);
        println!(
            "cargo:rerun-if-changed={}",
            dist.join("index.html").display()
        );
    } else {
        println!(
            "cargo:warning=web/dist is missing: the console at /ui/ is not embedded (run `make setup`)"
        );
    }
    files.sort();
    let mut out = String::from("/// (path under /ui/, content type, ETag, bytes)\n");
    out.push_str("pub static ASSETS: &[(&str, &str, &str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        let bytes = std::fs::read(abs).expect("reading a console asset");
        println!("cargo:rerun-if-changed={}", abs.display());
        // FNV-1a of the content: a validator, not a security feature.
        let hash = bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
        });
        let _ = writeln!(
            out,
            "    ({rel:?}, {:?}, \"\\\"{hash:016x}\\\"\", include_bytes!({:?})),",
            mime(rel),
            abs.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("console_assets.rs");
    std::fs::write(dest, out).expect("writing console_assets.rs");
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            println!("cargo:rerun-if-changed={}", p.display());
            collect(root, &p, files);
        } else if let Ok(rel) = p.strip_prefix(root) {
            let rel = rel.to_string_lossy().replace('\\', "/");
            files.push((rel, p.canonicalize().unwrap_or(p)));
        }
    }
}

fn mime(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
