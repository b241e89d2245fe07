//! `switchyard blur`, `detect` and `transcribe`: the face and speech pipelines on files, without a
//! server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use switchyard_infer::{Device, EngineChoice, LoadOptions};
use switchyard_vision::imageio::{Format, Quality};
use switchyard_vision::pipeline::{self, BlurOptions};
use switchyard_vision::{DetectorKind, DetectorParams, FaceDetector, Style};

/// Which model to run.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// blazeface-front, blazeface-back or centerface.
    #[arg(long, default_value = "centerface")]
    pub detector: String,
    /// Model file (default: the detector's file under models/).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// auto, ort or tract.
    #[arg(long, default_value = "auto")]
    pub engine: String,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Intra-op threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Minimum detection score.
    #[arg(long, default_value_t = 0.5)]
    pub score_threshold: f32,
    /// CenterFace: largest detector input side.
    #[arg(long, default_value_t = 1280,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(switchyard_config::MAX_SIDE_LIMIT)))]
    pub max_side: u32,
    /// BlazeFace full range: do not run on tiles.
    #[arg(long)]
    pub no_tiling: bool,
    /// CenterFace: run every photo at one square input shape, warmed at load (default: on a GPU).
    #[arg(long)]
    pub fixed_shape: Option<bool>,
    /// BlazeFace full range, tiled: tiles per model run (default: 32 on a GPU, 1 on the CPU).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=switchyard_config::MAX_TILE_BATCH as u64))]
    pub tile_batch: Option<u64>,
    /// Largest image in pixels.
    #[arg(long, default_value_t = 100_000_000)]
    pub max_pixels: u64,
}

impl ModelArgs {
    /// Loads the detector for one image. A tiled detector gets one session per core, so that the
    /// image alone runs its tiles on all of them at once (lanes; a full-frame detector gains nothing
    /// from them and loads one).
    fn load(&self) -> anyhow::Result<FaceDetector> {
        let tiled = !self.no_tiling && self.detector.starts_with("blazeface");
        self.load_for(if tiled { switchyard_infer::cores() } else { 1 })
    }

    /// Loads the detector for `workers` images at once: one session each, the cores shared among
    /// them (and all of them for an image alone) unless `--threads` says otherwise.
    fn load_for(&self, workers: usize) -> anyhow::Result<FaceDetector> {
        let kind = DetectorKind::parse(&self.detector).ok_or_else(|| {
            anyhow::anyhow!(
                "detector `{}` is not one of blazeface-front, blazeface-back, centerface",
                self.detector
            )
        })?;
        let model = self
            .model
            .clone()
            .unwrap_or_else(|| PathBuf::from(kind.default_model()));
        let opts = LoadOptions {
            engine: self
                .engine
                .parse::<EngineChoice>()
                .map_err(|e| anyhow::anyhow!(e))?,
            device: self
                .device
                .parse::<Device>()
                .map_err(|e| anyhow::anyhow!(e))?,
            threads: self.threads,
            sessions: workers,
            // The cores shared among the workers; the last photo alone gets them all.
            adaptive_threads: self.threads == 0,
            ..Default::default()
        };
        let params = DetectorParams {
            score_threshold: self.score_threshold,
            max_side: self.max_side,
            tiling: !self.no_tiling,
            fixed_shape: self.fixed_shape,
            tile_batch: self.tile_batch.map(|n| n as usize),
            ..Default::default()
        };
        FaceDetector::load(kind, &model, params, opts).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Prints an error and maps to an exit code.
pub fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How `switchyard blur` anonymises and writes.
#[derive(clap::Args, Debug, Clone)]
pub struct BlurArgs {
    /// blur, pixelate or mask.
    #[arg(long, default_value = "blur")]
    pub style: String,
    /// Strength multiplier.
    #[arg(long, default_value_t = 1.0)]
    pub strength: f32,
    /// Box growth on each side, as a fraction of the box.
    #[arg(long, default_value_t = 0.2)]
    pub margin: f32,
    /// Output format (jpeg, png, webp); default: the input's.
    #[arg(long)]
    pub format: Option<String>,
    /// JPEG quality: auto (a JPEG input's own quantization tables) or 1–100.
    #[arg(long, default_value = "auto")]
    pub quality: String,
}

/// Blurs every input into `out`. Files that fail are reported and counted; the others proceed.
pub fn blur(
    inputs: &[PathBuf],
    out: &Path,
    model: &ModelArgs,
    args: &BlurArgs,
) -> anyhow::Result<()> {
    let style = Style::parse(&args.style)
        .ok_or_else(|| anyhow::anyhow!("style `{}` is not blur, pixelate or mask", args.style))?;
    let format = args
        .format
        .as_deref()
        .map(|f| {
            Format::from_name(f)
                .ok_or_else(|| anyhow::anyhow!("format `{f}` is not jpeg, png or webp"))
        })
        .transpose()?;
    let quality = match args.quality.as_str() {
        "auto" => Quality::Auto,
        q => Quality::Fixed(
            q.parse()
                .ok()
                .filter(|q| (1..=100).contains(q))
                .ok_or_else(|| anyhow::anyhow!("quality `{q}` is not auto or 1 to 100"))?,
        ),
    };
    // Several photos: one worker per core, each with its own session, so that decoding and encoding
    // overlap with inference.
    let workers = switchyard_infer::cores().min(inputs.len()).max(1);
    let det = model.load_for(workers)?;
    std::fs::create_dir_all(out)?;
    let opts = BlurOptions {
        style,
        strength: args.strength,
        margin: args.margin,
        format,
        quality,
    };
    let bar = indicatif::ProgressBar::new(inputs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} images  {per_sec}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if inputs.len() < 2 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (faces, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let next = AtomicUsize::new(0);
    let written: anyhow::Result<()> = std::thread::scope(|scope| {
        let work = || -> anyhow::Result<()> {
            while let Some(input) = inputs.get(next.fetch_add(1, Ordering::Relaxed)) {
                // In progress from reading to writing: a worker between two photos still counts,
                // so the other does not take every core for what is not the last photo.
                let _request = det.model.request();
                let result = std::fs::read(input)
                    .map_err(anyhow::Error::from)
                    .and_then(|bytes| {
                        pipeline::blur_marked(&det, &bytes, model.max_pixels, &opts)
                            .map_err(|e| anyhow::anyhow!("{e}"))
                    });
                match result {
                    Ok((bytes, fmt, d)) => {
                        let stem = input
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_else(|| "image".into());
                        std::fs::write(out.join(format!("{stem}.{}", fmt.extension())), bytes)?;
                        faces.fetch_add(d.faces.len(), Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        bar.suspend(|| eprintln!("{}: {e:#}", input.display()));
                    }
                }
                bar.set_message(format!("{} faces", faces.load(Ordering::Relaxed)));
                bar.inc(1);
            }
            Ok(())
        };
        let handles: Vec<_> = (0..workers).map(|_| scope.spawn(work)).collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker panicked")))
        })
    });
    written?;
    let (faces, failed) = (faces.into_inner(), failed.into_inner());
    bar.finish_and_clear();
    eprintln!(
        "{} images, {faces} faces blurred, {failed} failed → {}",
        inputs.len(),
        out.display()
    );
    if failed > 0 {
        anyhow::bail!("{failed} of {} images failed", inputs.len());
    }
    Ok(())
}

/// Prints the faces of one image as JSON.
pub fn detect(input: &Path, model: &ModelArgs) -> anyhow::Result<()> {
    let det = model.load()?;
    let bytes = std::fs::read(input)?;
    let d = pipeline::detect(&det, &bytes, model.max_pixels).map_err(|e| anyhow::anyhow!("{e}"))?;
    let faces: Vec<_> = d
        .faces
        .iter()
        .map(|f| serde_json::json!({ "box": f.bbox, "score": f.score, "landmarks": f.landmarks }))
        .collect();
    let out = serde_json::json!({
        "file": input.display().to_string(),
        "width": d.width,
        "height": d.height,
        "detector": det.kind.as_str(),
        "engine": det.model.engine.as_str(),
        "faces": faces,
        "timings_ms": { "decode": d.timings.decode * 1e3, "infer": d.timings.infer * 1e3 },
    });
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Which speech model to run.
#[derive(clap::Args, Debug, Clone)]
pub struct AsrArgs {
    /// Model folder (encoder.onnx, decoder.onnx, joiner.onnx, tokens.txt).
    #[arg(long, default_value = "models/asr/zipformer-en-3m")]
    pub model_dir: PathBuf,
    /// Silero VAD model: segment long audio by speech.
    #[arg(long)]
    pub vad: Option<PathBuf>,
    /// auto, ort or tract.
    #[arg(long, default_value = "auto")]
    pub engine: String,
    /// cpu or cuda:N (ONNX Runtime's CUDA provider).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Intra-op threads (0 = one per core).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Longest audio accepted, seconds.
    #[arg(long, default_value_t = 3600.0)]
    pub max_audio_seconds: f64,
    /// greedy_search or modified_beam_search.
    #[arg(long, default_value = "greedy_search")]
    pub decoding_method: String,
    /// Hypotheses kept per frame by modified_beam_search.
    #[arg(long, default_value_t = 4)]
    pub max_active_paths: usize,
    /// mix (average a file's channels) or split (recognise each channel on its own; the JSON
    /// output then names each segment's channel and gives each channel's text).
    #[arg(long, default_value = "mix", value_parser = ["mix", "split"])]
    pub channels: String,
    /// Also write each transcript as subtitles, NAME.srt or NAME.vtt in --output-dir, one cue per
    /// segment (speakers named with --channels split).
    #[arg(long, value_parser = ["srt", "vtt"])]
    pub subtitles: Option<String>,
    /// Folder for --subtitles files.
    #[arg(long, default_value = ".")]
    pub output_dir: PathBuf,
}

/// Prints the text of every input (or one JSON object per line with `json`). Files that fail are
/// reported and counted; the others proceed.
pub fn transcribe(inputs: &[PathBuf], args: &AsrArgs, json: bool) -> anyhow::Result<()> {
    use switchyard_speech::{Decoding, Recognizer, RecognizerOptions, Transducer, VadModel};
    let decoding = Decoding::from_name(&args.decoding_method, args.max_active_paths)
        .map_err(|e| anyhow::anyhow!(e))?;
    let layout = switchyard_speech::audio::Channels::from_name(&args.channels)
        .ok_or_else(|| anyhow::anyhow!("--channels is mix or split"))?;
    let subtitles = args
        .subtitles
        .as_deref()
        .map(|f| {
            switchyard_speech::subtitles::Subtitles::from_name(f)
                .map(|s| (s, f))
                .ok_or_else(|| anyhow::anyhow!("--subtitles is srt or vtt"))
        })
        .transpose()?;
    if subtitles.is_some() {
        std::fs::create_dir_all(&args.output_dir)?;
    }
    let opts = LoadOptions {
        engine: args
            .engine
            .parse::<EngineChoice>()
            .map_err(|e| anyhow::anyhow!(e))?,
        device: args
            .device
            .parse::<Device>()
            .map_err(|e| anyhow::anyhow!(e))?,
        threads: args.threads,
        // Split channels are recognised at once, one session per core.
        sessions: match layout {
            switchyard_speech::audio::Channels::Split => switchyard_infer::cores(),
            _ => 1,
        },
        ..Default::default()
    };
    let lanes = opts.sessions;
    let model = std::sync::Arc::new(
        Transducer::load(&args.model_dir, &opts).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let vad = match &args.vad {
        Some(p) => Some(std::sync::Arc::new(
            VadModel::load(p, &opts).map_err(|e| anyhow::anyhow!("{e}"))?,
        )),
        None => None,
    };
    let rec = Recognizer {
        model,
        vad,
        options: RecognizerOptions {
            decoding,
            ..RecognizerOptions::default()
        },
    };
    let bar = indicatif::ProgressBar::new(inputs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} files  eta {eta}  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if inputs.len() < 2 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut failed, mut audio_s, mut busy_s) = (0usize, 0.0f64, 0.0f64);
    for input in inputs {
        let started = std::time::Instant::now();
        let result = std::fs::read(input)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| {
                let upload = crate::body::Upload {
                    bytes: bytes.into(),
                    file_name: input.file_name().map(|n| n.to_string_lossy().into_owned()),
                    mime: String::new(),
                    content_type: String::new(),
                };
                let tracks: Vec<Vec<f32>> =
                    crate::slot::decode_upload(&upload, args.max_audio_seconds, layout)
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .into_iter()
                        .map(|a| a.samples)
                        .collect();
                let t = rec
                    .transcribe_channels_on(&tracks, lanes)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if let Some((format, ext)) = subtitles {
                    let stem = input.file_stem().unwrap_or(input.as_os_str());
                    let path = args.output_dir.join(stem).with_extension(ext);
                    std::fs::write(&path, format.render(&t.segments))
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                }
                Ok(t)
            });
        let took = started.elapsed().as_secs_f64();
        match result {
            Ok(t) => {
                audio_s += t.duration_s;
                busy_s += took;
                let line = if json {
                    let mut v = serde_json::json!({
                        "file": input.display().to_string(),
                        "text": t.text,
                        "segments": t.segments,
                        "duration_s": t.duration_s,
                        "rtf": if t.duration_s > 0.0 { took / t.duration_s } else { 0.0 },
                    });
                    crate::slot::add_channels(&mut v, &t);
                    v.to_string()
                } else if inputs.len() > 1 {
                    format!("{}\t{}", input.display(), t.text)
                } else {
                    t.text
                };
                bar.suspend(|| println!("{line}"));
            }
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("{}: {e:#}", input.display()));
            }
        }
        bar.inc(1);
        if audio_s > 0.0 {
            bar.set_message(format!("RTF {:.3}", busy_s / audio_s));
        }
    }
    bar.finish_and_clear();
    if inputs.len() > 1 {
        eprintln!(
            "{} files, {audio_s:.1} s of audio in {busy_s:.1} s (RTF {:.3}), {failed} failed",
            inputs.len(),
            if audio_s > 0.0 { busy_s / audio_s } else { 0.0 }
        );
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} files failed", inputs.len());
    }
    Ok(())
}

/// `switchyard health`: GETs a plain-HTTP URL (the container's `HEALTHCHECK`, where no curl is
/// installed); succeeds on a 2xx answer within `timeout`.
pub fn health(url: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)?
        .next()
        .ok_or_else(|| anyhow::anyhow!("`{authority}` does not resolve"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') {
        Ok(())
    } else {
        anyhow::bail!("{url} answered `{}`", line.lines().next().unwrap_or(""))
    }
}
