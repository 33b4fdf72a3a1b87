"""How much precision the normal equations need: float64 products vs float32 batch products
accumulated in float64, on the embedded model's real activations (massive activations included).

For layers across the depth, the calibration stream's inputs X of o_proj and down_proj (64 x 128
WikiText-2 validation tokens) and a target Y = W' X from a perturbed copy of the layer's own
weights are accumulated both ways, batch by batch as the engine does; the damped least-squares
solve (reconstruction.ridge_toward) is then run on each, and we report the relative difference
of the solutions and of the least-squares objective they reach. Also the relative error of the
second moments themselves (the statistics the scores read).

    python scripts/precision_study.py    # writes results/bench/precision.{json,md}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from structprune.calibration.streams import capture_layer_inputs, propagate, tapped  # noqa: E402
from structprune.io.checkpoint import load_tensors  # noqa: E402
from structprune.model.geometry import decoder_layers  # noqa: E402
from structprune.pruning.reconstruction import LinearRefit, ridge_toward  # noqa: E402

LAYERS = (2, 8, 15, 22, 28)
DAMPS = (0.01, 1.0)


def accumulate(xs, ys, product_dtype):
    refit = LinearRefit(product_dtype=product_dtype)
    for x, y in zip(xs, ys):
        refit.add(x, y)
    return refit


def main() -> None:
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(REPO / "resources" / "models" / "smollm2-135m", torch_dtype=torch.float32)
    model.eval()
    ids = load_tensors(REPO / "resources" / "data" / "smollm2-135m" / "calib" / "wikitext2.safetensors")["input_ids"]
    batches = capture_layer_inputs(model, ids, 8)
    rows = []
    for index, layer in enumerate(decoder_layers(model)):
        if index in LAYERS:
            sites = {"o_proj": (layer.self_attn.o_proj, "in"), "down_proj": (layer.mlp.down_proj, "in")}
            inputs = {name: [] for name in sites}
            with tapped(sites) as seen:
                for batch in batches:
                    with torch.no_grad():
                        layer(batch.hidden, **batch.kwargs_for(layer))
                    for name in sites:
                        inputs[name].append(seen[name])
            for name, xs in inputs.items():
                weight = getattr(layer.self_attn if name == "o_proj" else layer.mlp, name).weight.data
                generator = torch.Generator().manual_seed(index)
                target = weight + 0.1 * weight.std() * torch.randn(weight.shape, generator=generator)
                ys = [x @ target.T for x in xs]
                exact, fast = accumulate(xs, ys, torch.float64), accumulate(xs, ys, torch.float32)
                moment_error = float((fast.xx - exact.xx).norm() / exact.xx.norm())
                for damp in DAMPS:
                    w64, w32 = ridge_toward(weight, exact, damp), ridge_toward(weight, fast, damp)
                    e64, e32 = exact.error(w64), exact.error(w32)
                    rows.append({
                        "layer": index, "site": name, "damp": damp, "moment_rel_error": moment_error,
                        "solution_rel_diff": float((w32.double() - w64.double()).norm() / w64.double().norm()),
                        "objective_rel_diff": (e32 - e64) / max(abs(e64), 1e-30),
                        "max_abs_activation": float(max(x.abs().max() for x in xs)),
                    })
                    print(rows[-1], flush=True)
        propagate(layer, batches)
    out = REPO / "results" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["# Normal equations: float32 batch products (accumulated in float64) vs float64 products",
             "", "`python scripts/precision_study.py`; SmolLM2-135M, 64 x 128 WikiText-2 validation tokens, "
             "target = the layer's weight plus 10 % noise, solved with `ridge_toward` on each.", "",
             "| layer | site | damp | max abs activation | second-moment rel. error | solution rel. diff | objective rel. diff |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['layer']} | {r['site']} | {r['damp']} | {r['max_abs_activation']:.1f} | {r['moment_rel_error']:.1e} | "
              f"{r['solution_rel_diff']:.1e} | {r['objective_rel_diff']:.1e} |" for r in rows]
    (out / "precision.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
