#!/usr/bin/env python3
"""Reference for recognising a call's channels separately (`channels=split`).

Builds a two-channel 16 kHz 16-bit WAV the way a call recorder writes one: the first speaker
(LibriSpeech 0.wav) on the left channel from 0 s, the second (librivox sense-and-sensibility 0870)
on the right channel from 1 s before the first stops talking, so the two overlap as people
interrupting each other do. Then reads the file back and transcribes, with the pipeline of the
model's README (asr_beam.py's numpy fbank and greedy search on ONNX Runtime), each channel on its
own and the average of the two (what `channels=mix` hears).

Writes {"file", "starts": [s, s], "ends": [s, s], "channels": [{"token_ids", "text"}, …],
"mix": {"token_ids", "text"}} beside the WAV.

Usage: asr_channels.py --model models/asr/zipformer-en-3m --left .cache/testdata/asr/0.wav
       --right …/sense_and_sensibility_01_austen_64kb-0870.wav --out .cache/reference/asr/call
"""

import argparse
import json
import os
import sys
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from asr_beam import RATE, Model, read_audio  # noqa: E402

OVERLAP_S = 1.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--left", required=True)
    ap.add_argument("--right", required=True)
    ap.add_argument("--out", required=True, help="output folder")
    a = ap.parse_args()
    left, right = read_audio(a.left), read_audio(a.right)
    start_right = len(left) - int(OVERLAP_S * RATE)
    frames = max(len(left), start_right + len(right))
    stereo = np.zeros((frames, 2))
    stereo[: len(left), 0] = left
    stereo[start_right : start_right + len(right), 1] = right
    pcm = (np.clip(stereo, -1, 32767 / 32768) * 32768).astype("<i2")

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "call_stereo.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    # What a decoder reads back: the 16-bit samples, as floats.
    with wave.open(str(path)) as w:
        back = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    back = back.astype(np.float64) / 32768.0

    model = Model(a.model)

    def transcribe(x: np.ndarray) -> dict:
        ids = model.greedy(x)
        return {"token_ids": ids, "text": model.text(ids)}

    result = {
        "file": path.name,
        "starts": [0.0, start_right / RATE],
        "ends": [len(left) / RATE, (start_right + len(right)) / RATE],
        "channels": [transcribe(back[:, 0]), transcribe(back[:, 1])],
        "mix": transcribe(back.mean(axis=1)),
    }
    (out / "call_stereo.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
