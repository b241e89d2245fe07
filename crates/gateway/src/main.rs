//! The `switchyard` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: ~5 % of a proxied request's CPU was in glibc malloc/free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use switchyard::cli;
use switchyard::run;
use switchyard::telemetry;
use switchyard_config::LogFormat;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Edge gateway for AI services: canary routing, fallback, in-process models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file; without it the embedded default runs.
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// Override the configured log format.
        #[arg(long, value_parser = parse_format)]
        log_format: Option<LogFormat>,
    },
    /// Validate a configuration file: exit 0, or 1 with every problem as `file:line: message`.
    Check {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Anonymise the faces in images, without a server.
    Blur {
        /// Input images (JPEG, PNG, WebP).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output folder (created if missing); files keep their names.
        #[arg(short, long)]
        out: PathBuf,
        #[command(flatten)]
        model: cli::ModelArgs,
        #[command(flatten)]
        options: cli::BlurArgs,
    },
    /// Print the text spoken in audio files (WAV incl. G.711 and GSM, FLAC, MP3, OGG, Opus, WebM; .raw/.pcm = 16 kHz s16le).
    Transcribe {
        /// Input audio files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[command(flatten)]
        model: cli::AsrArgs,
        /// One JSON object per file (text, segments, duration, RTF).
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when a URL answers 2xx (container health checks): default the admin `/healthz`.
    Health {
        /// Plain-HTTP URL.
        #[arg(long, default_value = "http://127.0.0.1:9901/healthz")]
        url: String,
        /// Seconds to wait.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Print the faces found in an image as JSON.
    Detect {
        /// Input image.
        input: PathBuf,
        #[command(flatten)]
        model: cli::ModelArgs,
    },
}

fn parse_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected `text` or `json`".into()),
    }
}

/// mimalloc's `mi_option_purge_delay` (`mi_option_e` in its `mimalloc.h`, the 16th entry in both
/// the v2 and v3 sources `libmimalloc-sys` ships; the Rust bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory stays with the process instead of going back to the OS a second later (mimalloc's
/// default): a photo's buffers (tens of MB) freed at one request's end were handed back and
/// faulted in again, page by page and zeroed by the kernel, by a later one, 2.6 % of a face
/// slot's CPU under load (`perf`). The resident size then stays at the peak the load reached, as
/// ONNX Runtime's arenas already do. `MIMALLOC_PURGE_DELAY` (milliseconds) in the environment
/// still decides when set.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, a plain integer it reads when it next purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    telemetry::install_panic_hook();
    match Cli::parse().command {
        Command::Check { config } => match switchyard_config::load_file(&config) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} slots, {} routes)",
                    config.display(),
                    cfg.slots.len(),
                    cfg.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{problems}");
                ExitCode::FAILURE
            }
        },
        Command::Blur {
            inputs,
            out,
            model,
            options,
        } => cli::exit(cli::blur(&inputs, &out, &model, &options)),
        Command::Detect { input, model } => cli::exit(cli::detect(&input, &model)),
        Command::Health { url, timeout } => {
            cli::exit(cli::health(&url, std::time::Duration::from_secs(timeout)))
        }
        Command::Transcribe {
            inputs,
            model,
            json,
        } => cli::exit(cli::transcribe(&inputs, &model, json)),
        Command::Serve { config, log_format } => {
            let cfg = match run::load_config(config.as_deref()) {
                Ok(cfg) => cfg,
                Err(problems) => {
                    eprintln!("{problems}");
                    return ExitCode::FAILURE;
                }
            };
            telemetry::init_logging(&cfg.log, log_format);
            if let Err(e) = telemetry::init_tracing_export(&cfg.log) {
                eprintln!("switchyard: {e:#}");
                return ExitCode::FAILURE;
            }
            // The control runtime (admin, signals, reloads); data-plane workers get their own threads.
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(run::serve(cfg, config)));
            telemetry::stop_tracing_export();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "switchyard failed");
                    eprintln!("switchyard: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
