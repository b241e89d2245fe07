#!/usr/bin/env python3
"""Independent test inputs for the ASR resampling and format tests: 0.wav (16 kHz mono s16, LibriSpeech)
resampled with numpy's FFT (band-limited, no code shared with Switchyard's rubato resampler) to 8,
22.05, 44.1 and 48 kHz, made stereo (right channel at 0.8x), and written as 16-bit, 24-bit and 32-bit
float WAV; encoded by libsndfile (PyPI soundfile) as FLAC, OGG/Vorbis, MP3 and OGG/Opus, and at 8 kHz
mono as G.711 µ-law and A-law, IMA ADPCM and GSM 6.10 WAV (telephone audio; with libsndfile's
decoding of each, as float WAV); and by FFmpeg's libopus (PyPI av) as WebM/Opus,
48 kHz mono, what a browser's MediaRecorder uploads.

Usage: audio_variants.py --src .cache/testdata/asr/0.wav --out .cache/reference/asr
"""

import argparse
import struct
import wave
from pathlib import Path

import numpy as np


def fft_resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    n_out = int(round(len(x) * sr_out / sr_in))
    spec = np.fft.rfft(x)
    keep = min(len(spec), n_out // 2 + 1)
    out_spec = np.zeros(n_out // 2 + 1, dtype=complex)
    out_spec[:keep] = spec[:keep]
    return np.fft.irfft(out_spec, n_out) * (n_out / len(x))


def write_wav(path: Path, rate: int, stereo: np.ndarray, kind: str) -> None:
    frames = stereo.shape[0]
    if kind == "s16":
        data = (np.clip(stereo, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()
        fmt, bits = 1, 16
    elif kind == "s24":
        ints = (np.clip(stereo, -1, 8388607 / 8388608) * 8388608).astype("<i4").reshape(-1)
        data = b"".join(struct.pack("<i", int(v))[:3] for v in ints)
        fmt, bits = 1, 24
    else:
        data = stereo.astype("<f4").tobytes()
        fmt, bits = 3, 32
    ch = 2
    block = ch * bits // 8
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, fmt, ch, rate, rate * block, block, bits)
    header += b"data" + struct.pack("<I", len(data))
    assert len(data) == frames * block
    path.write_bytes(header + data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with wave.open(a.src) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for rate, kind in [(8000, "s16"), (22050, "s16"), (44100, "s24"), (48000, "f32")]:
        y = fft_resample(x, 16000, rate)
        stereo = np.stack([y, 0.8 * y], axis=1)
        write_wav(out / f"0_{rate}_stereo_{kind}.wav", rate, stereo, kind)
        print(f"wrote {out}/0_{rate}_stereo_{kind}.wav")
    import soundfile as sf
    for rate, fmt, sub, ext in [(44100, "FLAC", "PCM_16", "flac"), (48000, "OGG", "VORBIS", "ogg"),
                                (22050, "MP3", "MPEG_LAYER_III", "mp3"), (48000, "OGG", "OPUS", "opus")]:
        y = fft_resample(x, 16000, rate)
        stereo = np.stack([y, 0.8 * y], axis=1)
        path = out / f"0_{rate}_stereo.{ext}"
        sf.write(str(path), stereo, rate, format=fmt, subtype=sub)
        print(f"wrote {path}")
    write_webm(out / "0_48000_mono.webm", fft_resample(x, 16000, 48000))
    # Telephone audio as call centres store it: 8 kHz mono G.711 (µ-law, A-law) in WAV, and the IMA
    # ADPCM of voice recorders.
    tel = fft_resample(x, 16000, 8000)
    for sub in ["ULAW", "ALAW", "IMA_ADPCM", "GSM610"]:
        path = out / f"0_8000_mono_{sub.lower()}.wav"
        sf.write(str(path), tel, 8000, format="WAV", subtype=sub)
        # libsndfile's own decoding of it, as 32-bit float WAV: what a decoder must give. For GSM
        # it returns the padding of the last 320-sample block too; the file's `fact` chunk counts
        # the source's samples, which is what is kept.
        decoded, rate = sf.read(str(path), dtype="float32")
        if sub == "GSM610":
            decoded = decoded[: len(tel)]
        sf.write(str(out / f"0_8000_mono_{sub.lower()}.decoded.wav"), decoded, rate, subtype="FLOAT")
        print(f"wrote {path} and its decoding")


def write_webm(path: Path, mono: np.ndarray) -> None:
    import av

    with av.open(str(path), "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        stream.bit_rate = 32000
        pcm = (np.clip(mono, -1, 32767 / 32768) * 32768).astype(np.int16)
        for start in range(0, len(pcm), 960):
            frame = av.AudioFrame.from_ndarray(pcm[None, start : start + 960], format="s16", layout="mono")
            frame.sample_rate = 48000
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
