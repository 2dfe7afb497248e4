"""Write a 2-16-16-2 MLP as two safetensors files: nn.Sequential names, and other names for a tensor map.

``mlp_sequential.safetensors`` holds the tensors PyTorch's ``nn.Sequential(Linear(2, 16), ReLU(),
Linear(16, 16), ReLU(), Linear(16, 2)).state_dict()`` would hold (``0.weight``, ``0.bias``, ``2.weight``,
``2.bias``, ``4.weight``, ``4.bias``; weights of shape ``(out, in)``), which ``metafab import`` reads as
they are. ``mlp_named.safetensors`` holds the same tensors as ``fc1.weight``, ``fc1.bias``, ... ``fc3.bias``
(a module with named layers), which needs a tensor map: ``--map W0=fc1.weight,b0=fc1.bias,...``.
The weights are random (He-normal, seeded), float32.

    python examples/safetensors_import/make_safetensors.py --out build/examples/safetensors_import
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

LAYERS = (2, 16, 16, 2)
#: The tensor map of mlp_named.safetensors: layer l's weight W<l> and bias b<l> by their names in the file.
TENSOR_MAP = ",".join(f"W{i}=fc{i + 1}.weight,b{i}=fc{i + 1}.bias" for i in range(len(LAYERS) - 1))


def arrays(seed: int = 0):
    """He-normal weights ``(out, in)`` and small random biases, float32, layer by layer."""
    rng = np.random.default_rng(seed)
    out = []
    for n_in, n_out in zip(LAYERS[:-1], LAYERS[1:], strict=True):
        w = rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)
        b = rng.standard_normal(n_out) * 0.1
        out.append((w.astype(np.float32), b.astype(np.float32)))
    return out


def write(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """Both files under ``out``; their paths (nn.Sequential names, named layers)."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    layers = arrays(seed)
    sequential = {}
    named = {}
    for i, (w, b) in enumerate(layers):
        sequential[f"{2 * i}.weight"], sequential[f"{2 * i}.bias"] = w, b   # Linear at Sequential index 0, 2, 4
        named[f"fc{i + 1}.weight"], named[f"fc{i + 1}.bias"] = w, b
    seq_path, named_path = out / "mlp_sequential.safetensors", out / "mlp_named.safetensors"
    save_file(sequential, str(seq_path))
    save_file(named, str(named_path))
    return seq_path, named_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", metavar="DIR", default=str(Path("build", "examples", "safetensors_import")),
                   help="output folder (default: build/examples/safetensors_import)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = p.parse_args(argv)
    for path in write(Path(args.out), args.seed):
        print(f"wrote {path}")
    print(f"tensor map of the named file: {TENSOR_MAP}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
