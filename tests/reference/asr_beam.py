"""Reference for the transducer's modified beam search: the pipeline of the model's README (numpy
Kaldi fbank, ONNX Runtime with 1 thread, 0.66 s tail padding, 45-frame windows every 32 frames)
followed by modified beam search as icefall and sherpa-onnx define it:

* every hypothesis is extended by every token at each encoder frame (blank and <unk> leave its tokens
  as they are), scored by its log-probability plus the token's log-softmax;
* the `paths` best extensions are kept; extensions with the same tokens are merged (log-add);
* the result is the hypothesis with the best log-probability per token (blank context included).

Greedy search over the same features is run too and must give the token ids of the model's own
`golden/expected.json` (written by the model's author), which checks this script's fbank and windows.

The int8 weights of the integer matrix products are given a uint8 form (+128, zero points too) before
ONNX Runtime sees them: the same products, but computed exactly on every CPU. ONNX Runtime's
uint8 x int8 kernel saturates on x86 CPUs without VNNI (AMD Zen 1-3, Intel before Ice Lake), where the
golden ids of librivox 0930 do not come out otherwise.
Writes {"paths": N, "utterances": [{"file", "token_ids", "text", "greedy_ids"}]}.
"""

import argparse
import json
import os
import wave

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

RATE = 16000
TAIL_S = 0.66


def read_audio(path: str) -> np.ndarray:
    if path.endswith(".raw"):
        pcm = np.frombuffer(open(path, "rb").read(), dtype="<i2")
    else:
        with wave.open(path) as w:
            assert w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2, path
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float64) / 32768.0


def mel_banks(n_fft: int = 512, bins: int = 80, low: float = 20.0, high: float = 7600.0) -> np.ndarray:
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    lo, hi = mel(low), mel(high)
    delta = (hi - lo) / (bins + 1)
    fft_mel = mel(np.arange(n_fft // 2) * RATE / n_fft)
    banks = np.zeros((bins, n_fft // 2 + 1))
    for b in range(bins):
        left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
        up = (fft_mel - left) / (center - left)
        down = (right - fft_mel) / (right - center)
        banks[b, : n_fft // 2] = np.maximum(0.0, np.minimum(up, down))
    return banks


def fbank(x: np.ndarray) -> np.ndarray:
    n = len(x)
    frames = (n + 80) // 160
    idx = np.arange(frames)[:, None] * 160 - 120 + np.arange(400)[None, :]
    idx = np.where(idx < 0, -idx - 1, idx)
    idx = np.where(idx >= n, 2 * n - 1 - idx, idx)
    f = x[idx]
    f = f - f.mean(axis=1, keepdims=True)
    f = np.concatenate([f[:, :1] - 0.97 * f[:, :1], f[:, 1:] - 0.97 * f[:, :-1]], axis=1)
    f = f * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399)) ** 0.85
    power = np.abs(np.fft.rfft(f, 512)) ** 2
    e = power @ mel_banks().T
    return np.log(np.maximum(e, np.finfo(np.float32).eps)).astype(np.float32)


def exact_int8(path: str) -> bytes:
    """The model at `path` with the constant int8 weights (and zero points) of MatMulInteger and
    ConvInteger shifted to uint8: w - zp and every product unchanged, no saturating kernel."""
    m = onnx.load(path)
    g = m.graph
    inits = {t.name: t for t in g.initializer}

    def as_u8(name: str) -> str:
        new = name + ".u8"
        if new not in inits:
            t = numpy_helper.from_array((numpy_helper.to_array(inits[name]).astype(np.int16) + 128).astype(np.uint8), new)
            g.initializer.append(t)
            inits[new] = t
        return new

    for node in g.node:
        if node.op_type not in ("MatMulInteger", "ConvInteger"):
            continue
        w = node.input[1]
        zp = node.input[3] if len(node.input) > 3 else ""
        if w not in inits or inits[w].data_type != onnx.TensorProto.INT8:
            continue
        if zp and (zp not in inits or inits[zp].data_type != onnx.TensorProto.INT8):
            continue
        node.input[1] = as_u8(w)
        if zp:
            node.input[3] = as_u8(zp)
        else:
            while len(node.input) < 3:
                node.input.append("")
            if "exact.u8.zero_point" not in inits:
                t = numpy_helper.from_array(np.array(128, np.uint8), "exact.u8.zero_point")
                g.initializer.append(t)
                inits[t.name] = t
            node.input.append("exact.u8.zero_point")
    read = {i for node in g.node for i in node.input} | {o.name for o in g.output} | {i.name for i in g.input}
    kept = [t for t in g.initializer if t.name in read]
    del g.initializer[:]
    g.initializer.extend(kept)
    return m.SerializeToString()


class Model:
    def __init__(self, d: str):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        load = lambda f: ort.InferenceSession(exact_int8(os.path.join(d, f)), so, providers=["CPUExecutionProvider"])  # noqa: E731
        self.enc, self.dec, self.joi = load("encoder.onnx"), load("decoder.onnx"), load("joiner.onnx")
        meta = self.enc.get_modelmeta().custom_metadata_map
        self.window, self.shift = int(meta["T"]), int(meta["decode_chunk_len"])
        self.context = int(self.dec.get_modelmeta().custom_metadata_map.get("context_size", 2))
        self.inputs = self.enc.get_inputs()
        tokens = [line.split() for line in open(os.path.join(d, "tokens.txt"), encoding="utf-8")]
        self.unk = next((int(t[1]) for t in tokens if t[0] == "<unk>"), None)
        self.symbols = {int(t[1]): t[0] for t in tokens if len(t) == 2}

    def text(self, ids) -> str:
        return "".join(self.symbols[i] for i in ids).replace("\u2581", " ").strip()

    def encoder_frames(self, samples: np.ndarray):
        """Yields the encoder output frames, window by window, states carried."""
        audio_frames = (len(samples) + 80) // 160
        feats = fbank(np.concatenate([samples, np.zeros(int(TAIL_S * RATE))]))
        states = {}
        for i in self.inputs[1:]:
            dtype = np.int64 if i.type == "tensor(int64)" else np.float32
            states[i.name] = np.zeros(i.shape, dtype=dtype)
        start = 0
        while True:
            x = feats[start : start + self.window]
            if len(x) < self.window:
                # A partial window runs only when it starts inside the real audio.
                if len(x) <= self.window - self.shift or start >= audio_frames:
                    return
                pad = np.full((self.window - len(x), x.shape[1]), np.log(1e-10), np.float32)
                x = np.concatenate([x, pad])
            outs = self.enc.run(None, {self.inputs[0].name: x[None], **states})
            for k, name in enumerate(states):
                states[name] = outs[1 + k]
            yield from outs[0][0]
            start += self.shift

    def decoder(self, contexts) -> np.ndarray:
        return self.dec.run(None, {"y": np.array(contexts, dtype=np.int64)})[0]

    def joiner(self, enc: np.ndarray, dec: np.ndarray) -> np.ndarray:
        return self.joi.run(None, {"encoder_out": enc, "decoder_out": dec})[0]

    def greedy(self, samples: np.ndarray):
        ys = [0] * self.context
        dec = self.decoder([ys[-self.context :]])
        for frame in self.encoder_frames(samples):
            k = int(np.argmax(self.joiner(frame[None], dec)[0]))
            if k != 0 and k != self.unk:
                ys.append(k)
                dec = self.decoder([ys[-self.context :]])
        return ys[self.context :]

    def beam(self, samples: np.ndarray, paths: int):
        # Each hypothesis: (token ids incl. blank context, log-probability, decoder output).
        start = [0] * self.context
        hyps = [(start, 0.0, self.decoder([start])[0])]
        for frame in self.encoder_frames(samples):
            logits = self.joiner(
                np.repeat(frame[None], len(hyps), axis=0), np.stack([h[2] for h in hyps])
            ).astype(np.float64)
            logp = logits - logits.max(axis=1, keepdims=True)
            logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
            scores = (logp + np.array([h[1] for h in hyps])[:, None]).ravel()
            vocab = logits.shape[1]
            order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:paths]
            merged = {}
            for i in order:
                ys, _, dec = hyps[i // vocab]
                k = i % vocab
                new = ys + [k] if k != 0 and k != self.unk else ys
                key = tuple(new)
                if key in merged:
                    a, b = merged[key][1], scores[i]
                    merged[key] = (new, max(a, b) + np.log1p(np.exp(-abs(a - b))), merged[key][2])
                else:
                    merged[key] = (new, scores[i], dec if new is ys else None)
            fresh = [key for key, h in merged.items() if h[2] is None]
            if fresh:
                outs = self.decoder([list(key[-self.context :]) for key in fresh])
                for key, out in zip(fresh, outs):
                    merged[key] = (merged[key][0], merged[key][1], out)
            hyps = list(merged.values())
        best = max(hyps, key=lambda h: h[1] / len(h[0]))
        return best[0][self.context :]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="model directory")
    ap.add_argument("--expected", required=True, help="the model's golden/expected.json")
    ap.add_argument("--testdata", required=True, help="directory of the non-Debian clips")
    ap.add_argument("--paths", type=int, default=4)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    model = Model(a.model)
    out = []
    for e in json.load(open(a.expected)):
        src = e["source"]
        path = src.split("pocketsphinx-testdata:", 1)[1] if "pocketsphinx-testdata:" in src else os.path.join(a.testdata, e["file"])
        samples = read_audio(path)
        greedy = model.greedy(samples)
        assert greedy == e["token_ids"], f"{e['file']}: this script's greedy search disagrees with the golden ids"
        ids = model.beam(samples, a.paths)
        out.append({"file": e["file"], "token_ids": ids, "text": model.text(ids), "greedy_ids": greedy})
    json.dump({"paths": a.paths, "utterances": out}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
