#!/usr/bin/env python3
"""ASR benchmark driver (run by benches/asr/run.sh): the same clips and the same model through
(a) sherpa-onnx (PyPI, OnlineRecognizer.from_transducer, greedy search, 1 thread; and a second table
    with modified beam search, 4 paths, against `switchyard transcribe --decoding-method modified_beam_search`),
(b) `switchyard transcribe` (CLI, 1 thread), (c) Switchyard HTTP /transcribe (1 thread),
(d) Switchyard WebSocket streams: 1 vs 2 concurrent (aggregate throughput), and the latency of
partial results when audio is sent in real time."""

import asyncio
import json
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import requests
import sherpa_onnx
from websockets.sync.client import connect

MODEL = Path("models/asr/zipformer-en-3m")


def load(path: Path) -> np.ndarray:
    if path.suffix == ".raw":
        return np.frombuffer(path.read_bytes(), dtype="<i2").astype(np.float32) / 32768
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768


def sherpa(clips, rounds, method="greedy_search"):
    rec = sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(MODEL / "tokens.txt"), encoder=str(MODEL / "encoder.onnx"),
        decoder=str(MODEL / "decoder.onnx"), joiner=str(MODEL / "joiner.onnx"),
        num_threads=1, sample_rate=16000, feature_dim=80, decoding_method=method, max_active_paths=4)
    texts, best = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        texts = []
        for x in clips:
            s = rec.create_stream()
            s.accept_waveform(16000, x)
            s.accept_waveform(16000, np.zeros(10560, dtype=np.float32))
            s.input_finished()
            while rec.is_ready(s):
                rec.decode_stream(s)
            texts.append(rec.get_result(s).strip())
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, texts


def cli(paths, rounds, method="greedy_search"):
    best, texts = None, []
    for _ in range(rounds):
        out = subprocess.run(["target/release/switchyard", "transcribe", "--threads", "1", "--engine", "ort",
                              "--decoding-method", method, "--max-active-paths", "4",
                              "--json", *map(str, paths)], capture_output=True, text=True, check=True).stdout
        rows = [json.loads(l) for l in out.splitlines()]
        dt = sum(r["rtf"] * r["duration_s"] for r in rows)  # per-file time, without model loading
        texts = [r["text"] for r in rows]
        best = dt if best is None else min(best, dt)
    return best, texts


def http(base, paths, rounds):
    best, texts = None, []
    bodies = [p.read_bytes() for p in paths]
    ct = ["audio/l16; rate=16000" if p.suffix == ".raw" else "audio/wav" for p in paths]
    for _ in range(rounds):
        t0 = time.perf_counter()
        texts = [requests.post(f"{base}/v1/asr/transcribe", data=b, headers={"content-type": c}).json()["text"]
                 for b, c in zip(bodies, ct)]
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, texts


def ws_stream(ws_url, pcm, realtime, chunk_s=0.1, out=None):
    """Streams int16 PCM; returns (seconds, final text, [(recv_time - send_time of latest chunk)])."""
    step = int(16000 * chunk_s) * 2
    lat, finals = [], []
    sent_at = [0.0]
    start = [0.0]
    done = threading.Event()
    with connect(ws_url, max_size=None) as ws:
        def reader():
            for msg in ws:
                if isinstance(msg, str):
                    m = json.loads(msg)
                    now = time.perf_counter()
                    lat.append((m["type"], now - sent_at[0], now - start[0], m.get("until")))
                    if m["type"] == "final":
                        finals.append(m["text"])
            done.set()
        t = threading.Thread(target=reader)
        t.start()
        t0 = time.perf_counter()
        start[0] = t0
        for i in range(0, len(pcm), step):
            if realtime:
                delay = t0 + (i // step) * chunk_s - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            sent_at[0] = time.perf_counter()
            ws.send(pcm[i:i + step])
        ws.send(json.dumps({"event": "end"}))
        done.wait(120)
        dt = time.perf_counter() - t0
        t.join()
    if out is not None:
        out.append(dt)
    return dt, " ".join(finals), lat


async def ws_flood(ws_url, pcm, n):
    """Sends `pcm` on `n` concurrent streams as fast as the server takes it; returns the seconds."""
    from websockets.asyncio.client import connect as aconnect

    async def one():
        async with aconnect(ws_url, max_size=None) as ws:
            for i in range(0, len(pcm), 32000):
                await ws.send(pcm[i:i + 32000])
            await ws.send(json.dumps({"event": "end"}))
            async for _ in ws:
                pass

    t0 = time.perf_counter()
    await asyncio.gather(*[one() for _ in range(n)])
    return time.perf_counter() - t0


def main():
    base, ws_base, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    paths = [Path(p) for p in sys.argv[4:]]
    clips = [load(p) for p in paths]
    audio_s = sum(len(c) for c in clips) / 16000
    pcm = [(np.clip(c, -1, 1) * 32767).astype("<i2").tobytes() for c in clips]
    print(f"{len(paths)} clips, {audio_s:.1f} s of speech, median of {rounds} interleaved rounds, 1 inference thread")

    # Interleaved rounds (sherpa, CLI, HTTP, sherpa, …) and the median of each: this 2-core machine's
    # speed drifts by ±20 % over minutes, which would otherwise decide the ratio.
    times = {"s": [], "c": [], "h": [], "sb": [], "cb": []}
    for _ in range(rounds):
        dt, s_texts = sherpa(clips, 1)
        times["s"].append(dt)
        dt, c_texts = cli(paths, 1)
        times["c"].append(dt)
        dt, h_texts = http(base, paths, 1)
        times["h"].append(dt)
        dt, sb_texts = sherpa(clips, 1, "modified_beam_search")
        times["sb"].append(dt)
        dt, cb_texts = cli(paths, 1, "modified_beam_search")
        times["cb"].append(dt)
    med = lambda v: sorted(v)[len(v) // 2]
    s_dt, c_dt, h_dt = med(times["s"]), med(times["c"]), med(times["h"])
    same = sum(a == b for a, b in zip(s_texts, c_texts))
    print(f"\n{'pipeline':34} {'RTF':>8} {'x real time':>12} {'ratio vs sherpa':>16}")
    for name, dt in [("sherpa-onnx 2 (Python, 1 thread)", s_dt), ("switchyard transcribe (CLI)", c_dt),
                     ("switchyard HTTP /transcribe", h_dt)]:
        print(f"{name:34} {dt / audio_s:8.4f} {audio_s / dt:12.1f} {(dt / audio_s) / (s_dt / audio_s):16.2f}")
    print(f"identical transcripts sherpa-onnx vs switchyard: {same}/{len(paths)}; HTTP == CLI: "
          f"{sum(a == b for a, b in zip(c_texts, h_texts))}/{len(paths)}")
    sb_dt, cb_dt = med(times["sb"]), med(times["cb"])
    print("\nmodified_beam_search, 4 active paths:")
    for name, dt in [("sherpa-onnx 2 (Python, 1 thread)", sb_dt), ("switchyard transcribe (CLI)", cb_dt)]:
        print(f"{name:34} {dt / audio_s:8.4f} {audio_s / dt:12.1f} {dt / sb_dt:16.2f}")
    print(f"identical transcripts sherpa-onnx vs switchyard: {sum(a == b for a, b in zip(sb_texts, cb_texts))}"
          f"/{len(paths)}; beam vs greedy (switchyard): {sum(a != b for a, b in zip(c_texts, cb_texts))} differ")

    # Throughput of live streams sent as fast as possible, in 1 s messages, from an asyncio client (a
    # thread per stream in Python costs enough CPU, on the same 2 cores, to hide the server's scaling):
    # 1 stream, then 2 at once.
    allpcm = b"".join(pcm)
    one = min(asyncio.run(ws_flood(ws_base, allpcm, 1)) for _ in range(rounds))
    best_two = min(asyncio.run(ws_flood(ws_base, allpcm, 2)) for _ in range(rounds))
    tp1, tp2 = audio_s / one, 2 * audio_s / best_two
    print(f"\nWebSocket streams, unpaced, 1 s messages: 1 stream {tp1:.1f}x real time; 2 concurrent {tp2:.1f}x "
          f"aggregate = {tp2 / tp1:.2f}x one stream")
    # The machine's own ceiling for that ratio: the encoder alone on bare ONNX Runtime, 1 process then 2.
    bare = json.loads(subprocess.run([sys.executable, "benches/asr/bare_scaling.py", str(MODEL / "encoder.onnx"),
                                      "300", str(rounds)], capture_output=True, text=True, check=True).stdout)
    print(f"the same on bare ONNX Runtime (the encoder alone, 1 process vs 2 at once): {bare['ratio']:.2f}x")

    # Latency of results when audio arrives in real time (100 ms messages): time from sending the
    # last chunk before a message to receiving the message, and the first partial after speech onset.
    lats = []
    firsts = []
    stream_firsts = []
    for p in pcm:
        _, _, lat = ws_stream(ws_base, p, True)
        lats += [l for _, l, _, _ in lat]
        # How long after the audio it covers (the end of its last token's frame) each partial arrives.
        behind = [at - until for k, _, at, until in lat if k == "partial" and until is not None]
        firsts += behind
        if behind:
            stream_firsts.append(behind[0])  # the stream's first partial result
    lats.sort()
    firsts.sort()
    q = lambda f: lats[min(len(lats) - 1, int(f * len(lats)))] * 1e3
    print(f"real-time streaming: result latency after the audio that produced it p50 {q(0.5):.0f} ms, "
          f"p95 {q(0.95):.0f} ms, max {lats[-1] * 1e3:.0f} ms ({len(lats)} messages)")
    print(f"partial results after the speech they cover: median {firsts[len(firsts) // 2] * 1e3:.0f} ms, "
          f"p95 {firsts[int(0.95 * len(firsts))] * 1e3:.0f} ms, max {firsts[-1] * 1e3:.0f} ms over {len(firsts)} "
          f"partials (a token waits for its 320 ms chunk plus 130 ms of look-ahead, and audio arrives in 100 ms messages)")
    stream_firsts.sort()
    print(f"first partial result of each live stream after the speech it covers: median "
          f"{stream_firsts[len(stream_firsts) // 2] * 1e3:.0f} ms, max {stream_firsts[-1] * 1e3:.0f} ms "
          f"over {len(stream_firsts)} streams (target: within 400 ms)")
    diff = [(p.name, a, b) for p, a, b in zip(paths, s_texts, c_texts) if a != b]
    for name, a, b in diff:
        print(f"differs on {name}:\n  sherpa-onnx: {a}\n  switchyard:  {b}")


if __name__ == "__main__":
    main()
