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

fn main() -> ExitCode {
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
