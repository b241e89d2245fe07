#!/usr/bin/env python3
"""Graph repairs for published model files that do not run as released.

zipformer-downsample-concat: the k2-fsa `-mobile` int8 zipformer2 encoders were saved after ONNX
Runtime's fixed-shape optimisation, which left in each SimpleDownsample block a 1-row `Slice` (the pad
branch, which should be empty for a 16-frame chunk) concatenated to the 16-frame tensor, so Reshape
fails with "{17,1,128} vs {8,2,1,128}". The repair rewires every consumer of
`/downsample*/Concat_1` to that Concat's first input and deletes the Concat and its Slice. No weight
changes. See ../shared/models/asr/*/README.md, "Pitfalls" 1.

Usage: repair_model.py REPAIR FILE (rewrites FILE in place). Needs the `onnx` package.
"""

import sys

import onnx


def zipformer_downsample_concat(model: onnx.ModelProto) -> int:
    g = model.graph
    fixed = 0
    for node in list(g.node):
        if node.op_type != "Concat" or not node.name.startswith("/downsample") or not node.name.endswith("/Concat_1"):
            continue
        keep, out = node.input[0], node.output[0]
        for other in g.node:
            for i, name in enumerate(other.input):
                if name == out:
                    other.input[i] = keep
        slices = [n for n in g.node if n.op_type == "Slice" and any(o in node.input[1:] for o in n.output)]
        g.node.remove(node)
        for s in slices:
            if not any(s.output[0] in n.input for n in g.node):
                g.node.remove(s)
        fixed += 1
    return fixed


REPAIRS = {"zipformer-downsample-concat": zipformer_downsample_concat}


def main() -> int:
    name, path = sys.argv[1], sys.argv[2]
    model = onnx.load(path)
    n = REPAIRS[name](model)
    if n == 0:
        raise SystemExit(f"{path}: nothing to repair for {name}")
    onnx.checker.check_model(model)
    onnx.save(model, path)
    print(f"{path}: {name}: {n} blocks repaired")
    return 0


if __name__ == "__main__":
    sys.exit(main())
