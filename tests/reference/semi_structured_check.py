#!/usr/bin/env python3
"""Independent check of `ap export --format semi-structured` (tests/tests/export_nm.rs).

    semi_structured_check.py <export.safetensors> <export.json> <test.safetensors>

Checks, from the constraints of torch.sparse.to_sparse_semi_structured (torch 2.11): every
exported layer is a 2-D contiguous float16 tensor whose shape is a multiple of 32 x 64 and
holds at most 2 non-zeros in every 4 consecutive values of a row; then runs the MLP the file
describes (LeNet-300-100: fc1, fc2, fc3 with ReLU between) on the test split in float32 and
prints {"accuracy": ...}. On a CUDA machine it also multiplies through
to_sparse_semi_structured and compares with the dense product. Exit status 0 on success.
"""

import json
import sys
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from prune_ref import read_safetensors  # noqa: E402


def main():
    export_path, json_path, test_path = sys.argv[1:4]
    tensors = read_safetensors(export_path)
    meta = json.load(open(json_path))
    data = read_safetensors(test_path)
    assert meta["pattern"] == "2:4", meta["pattern"]
    weights = {}
    for layer in meta["layers"]:
        t = tensors[layer["name"]]
        rows, cols = layer["rows_cols"]
        assert t.dim() == 2 and t.is_contiguous(), layer
        assert t.dtype == torch.float16, t.dtype
        assert list(t.shape) == layer["padded"], (t.shape, layer)
        assert t.shape[0] % 32 == 0 and t.shape[1] % 64 == 0, t.shape
        per_four = (t != 0).reshape(-1, 4).sum(1)
        assert int(per_four.max()) <= 2, f"{layer['name']}: more than 2 of 4"
        assert int((t != 0).sum()) == layer["kept"], layer
        # The padding is zero.
        assert int((t[rows:] != 0).sum()) == 0 and int((t[:, cols:] != 0).sum()) == 0
        weights[layer["name"]] = t[:rows, :cols].float().reshape(layer["shape"])
        if torch.cuda.is_available():
            from torch.sparse import to_sparse_semi_structured

            dense = t.cuda()
            sparse = to_sparse_semi_structured(dense)
            x = torch.randn(dense.shape[1], 64, dtype=torch.float16, device="cuda")
            assert torch.allclose(sparse @ x, dense @ x, rtol=1e-2, atol=1e-2)
    for name in meta["dense_layers"] + meta["others"]:
        weights[name] = tensors[name].float()
    layers = sorted({n.split(".")[0] for n in weights if n.startswith("fc")})
    x = data["images"].float().flatten(1)
    for i, name in enumerate(layers):
        x = torch.nn.functional.linear(x, weights[f"{name}.weight"], weights.get(f"{name}.bias"))
        if i < len(layers) - 1:
            x = torch.relu(x)
    accuracy = (x.argmax(1) == data["labels"].long()).float().mean().item()
    print(json.dumps({"accuracy": accuracy, "layers": len(meta["layers"])}))


if __name__ == "__main__":
    main()
