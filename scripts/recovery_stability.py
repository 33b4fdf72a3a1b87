"""Where the paper's pre-pruning recovery (`reconstruct: paper`) amplifies rounding (issue #33).

Runs the recovered stage of a method twice on the same model and samples: once as is, once
with the hidden states entering layer 0 (both streams: the dense and the pruned one start
there) multiplied by (1 + eps * noise), noise seeded standard normal, eps = 1e-7 by default:
a perturbation at float32 rounding level, like another CPU's rounding of the embedding
lookup's consumers. Each run records, per layer: the units the layer keeps, the decisive
margins of the plan (the relative gap between the last removed and the first kept score in
every kv group and among the neurons; the smallest |D_ij - tau| / tau of the Jensen-Shannon
candidates), each refit's damped system (its condition number and its smallest eigenvalue
over the damping floor), and the layer's weights after it was refit and pruned. The report
gives, per layer, whether the plans differ and the relative difference of the weights, and
the first layer where they diverge; with --ppl, the perplexity of both pruned models.

    python scripts/recovery_stability.py --model resources/models/smollm2-135m \
        --data resources/data/smollm2-135m/calib/wikitext2.safetensors --sparsity 35 \
        --ppl wikitext2=resources/data/smollm2-135m/eval/wikitext2.safetensors --out stability.json
    python scripts/recovery_stability.py summarize stability.json ...   # a markdown table

Measurement only: the perplexity is read to report how far a result moves, never to choose.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from structprune.calibration import statistics  # noqa: E402
from structprune.io.checkpoint import load_tensors  # noqa: E402
from structprune.model.loading import load_checkpoint  # noqa: E402
from structprune.pruning import engine, layerstep, reconstruction, refitflow  # noqa: E402
from structprune.pruning.scores import distribution  # noqa: E402
from structprune.spec.recipe import Recipe  # noqa: E402
from structprune.stages.argtypes import sparsity as sparsity_percent  # noqa: E402

ORIGINALS = (engine.capture_layer_inputs, reconstruction._ridge_solution, distribution.redundancy_candidates,
             refitflow.pre_pruning_refit_layer)


def relative_gap(scores: torch.Tensor, remove: int) -> float | None:
    """|s_(remove) - s_(remove-1)| / max(|.|) of the ascending scores: how far the last removed
    unit is from the first kept one (0: a tie the plan breaks by index)."""
    if remove <= 0 or remove >= scores.numel():
        return None
    ordered = torch.sort(scores.to(torch.float64)).values
    low, high = float(ordered[remove - 1]), float(ordered[remove])
    scale = max(abs(low), abs(high), 1e-300)
    return (high - low) / scale


class Recorder:
    """Monkeypatches the engine's seams to record what each layer decided and solved."""

    def __init__(self, eps: float, seed: int, conditioning: bool):
        self.eps, self.seed, self.conditioning = eps, seed, conditioning
        self.layer = None
        self.layers: dict[int, dict] = {}
        self.weights: dict[str, torch.Tensor] = {}
        self.scores: dict[int, tuple] = {}
        self.hidden: dict[int, torch.Tensor] = {}

    def entry(self) -> dict:
        return self.layers.setdefault(self.layer, {"solves": [], "js_margin": [], "candidates": []})

    def install(self):
        capture, solve, candidates, paper_layer = ORIGINALS
        recorder = self

        def perturbed_capture(model, samples, batch_size):
            batches = capture(model, samples, batch_size)
            if recorder.eps:
                generator = torch.Generator().manual_seed(recorder.seed)
                for batch in batches:
                    noise = torch.randn(batch.hidden.shape, generator=generator, dtype=torch.float64)
                    batch.hidden = (batch.hidden.double() * (1 + recorder.eps * noise)).to(batch.hidden.dtype)
            return batches

        def recorded_solve(w0, refit, damp):
            solution, lam = solve(w0, refit, damp)
            if recorder.conditioning:
                lhs, _ = reconstruction._damped_system(refit, damp)
                eig = torch.linalg.eigvalsh(lhs)
                raw = torch.linalg.eigvalsh(refit.xx)
                recorder.entry()["solves"].append({
                    "size": int(lhs.shape[0]), "cond_damped": float(eig[-1] / eig[0]), "cond_raw": float(raw[-1] / raw[0].abs().clamp_min(1e-300)),
                    "min_eig_over_min_lambda": float(raw[0] / lam.min()),
                })
            return solution, lam

        def recorded_candidates(divergence, tau):
            d = divergence.to(torch.float64)
            off = ~torch.eye(d.shape[0], dtype=torch.bool)
            recorder.entry()["js_margin"].append(float(((d[off] - tau).abs() / tau).min()))
            found = candidates(divergence, tau)
            recorder.entry()["candidates"].append(found)
            return found

        def recorded_layer(ctx, index, layer, geometry, budget):
            recorder.layer = index
            scores_seen = []
            layer_scores = layerstep.layer_scores

            def scoring(ctx_, index_, layer_, moments, heads_only=False):
                out = layer_scores(ctx_, index_, layer_, moments, heads_only)
                scores_seen.append((heads_only, out))
                return out

            layerstep.layer_scores = scoring
            try:
                lp, report = paper_layer(ctx, index, layer, geometry, budget)
            finally:
                layerstep.layer_scores = layer_scores
            entry = self.entry()
            heads = next(s.heads for h, s in scores_seen if h)
            neurons = next(s.neurons for h, s in scores_seen if not h)
            group = geometry.heads_per_kv
            entry["head_gaps"] = [relative_gap(heads[g * group:(g + 1) * group], budget.heads) for g in range(geometry.num_kv_heads)]
            entry["neuron_gap"] = relative_gap(neurons, budget.neurons)
            entry["plan"] = {"heads": lp.keep_heads, "neurons": lp.keep_neurons}
            recorder.scores[index] = (heads.to(torch.float64).clone(), neurons.to(torch.float64).clone())
            recorder.hidden[index] = torch.cat([batch.hidden for batch in ctx.pruned]).clone()
            entry["report"] = report
            for name, tensor in layer.state_dict().items():
                self.weights[f"{index}.{name}"] = tensor.detach().clone()
            print(f"eps {recorder.eps:g} layer {index}: {len(lp.keep_heads)} heads, {len(lp.keep_neurons)} neurons",
                  file=sys.stderr, flush=True)
            return lp, report

        engine.capture_layer_inputs = perturbed_capture
        reconstruction._ridge_solution = recorded_solve
        distribution.redundancy_candidates = recorded_candidates
        refitflow.pre_pruning_refit_layer = recorded_layer


def run(args, eps: float, seed: int = 0) -> tuple[Recorder, dict]:
    recorder = Recorder(eps, seed, args.conditioning)
    recorder.install()
    model, _ = load_checkpoint(args.model, torch.float32)
    exact = bool(eps) and args.perturb == "products"  # the batch products in float64: their float32 rounding is the perturbation
    reconstruction.LinearRefit.__init__.__defaults__ = (None, None, None, 0, torch.float64 if exact else torch.float32)
    statistics.MomentAccumulator.__init__.__defaults__ = (0, None, None, torch.float64 if exact else torch.float32)
    if exact:
        recorder.eps = 0.0
    if eps and args.perturb == "weights":  # every parameter at rounding level: both streams, every layer
        generator = torch.Generator().manual_seed(recorder.seed)
        with torch.no_grad():
            for parameter in model.parameters():
                noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
                parameter.copy_((parameter.double() * (1 + eps * noise)).to(parameter.dtype))
        recorder.eps = 0.0  # the layer-0 input is not perturbed a second time
    samples = load_tensors(args.data)["input_ids"]
    recipe = Recipe(score="distribution", flow="sequential", reconstruct="paper", damp=args.damp, layers="protocol")
    started = time.time()
    result = engine.prune_with_recipe(model, recipe, args.sparsity, samples=samples, batch_size=8, progress=False)
    out = {"seconds": round(time.time() - started, 1), "ppl": {}}
    if args.ppl:
        from structprune.evaluation.perplexity import perplexity

        for name, path in args.ppl:
            out["ppl"][name] = perplexity(result.model, load_tensors(path)["input_ids"], 128, 4096, progress=False)["ppl"]
    return recorder, out


def compare(a: Recorder, b: Recorder) -> list[dict]:
    rows = []
    for index in sorted(a.layers):
        la, lb = a.layers[index], b.layers[index]
        names = sorted({k.split(".", 1)[1] for k in a.weights if k.startswith(f"{index}.")})
        diffs = {}
        for name in names:
            wa, wb = a.weights[f"{index}.{name}"], b.weights[f"{index}.{name}"]
            diffs[name] = float((wa - wb).norm() / wa.norm()) if wa.shape == wb.shape else None
        ha, hb = a.hidden[index], b.hidden[index]
        (sa_heads, sa_neurons), (sb_heads, sb_neurons) = a.scores[index], b.scores[index]
        rows.append({
            "layer": index, "hidden_rel_diff": float((ha - hb).norm() / ha.norm()),
            "neuron_score_rel_diff": float(((sa_neurons - sb_neurons).abs() / sa_neurons.abs().clamp_min(1e-300)).max()),
            "head_score_rel_diff": float(((sa_heads - sb_heads).abs() / sa_heads.abs().clamp_min(1e-300)).max()), "same_plan": la["plan"] == lb["plan"],
            "heads_differ": sorted(set(la["plan"]["heads"]) ^ set(lb["plan"]["heads"])),
            "neurons_differ": len(set(la["plan"]["neurons"]) ^ set(lb["plan"]["neurons"])) // 2,
            "candidates": (la["candidates"], lb["candidates"]),
            "max_weight_rel_diff": max((d for d in diffs.values() if d is not None), default=None),
            "weight_rel_diff": diffs,
            "min_head_gap": min((g for g in la["head_gaps"] if g is not None), default=None),
            "neuron_gap": la["neuron_gap"], "js_margin": la["js_margin"], "solves": la["solves"],
        })
    return rows


def summarize(paths: list[str]) -> str:
    """A markdown table of finished runs (their --out files): per run and perturbed seed, the
    first layer whose plan differs, the largest relative drift of the pruned stream and of any
    refit weight, and each perplexity's relative change."""
    lines = ["| run | damp | perturbation | seed | first plan divergence | max hidden drift | max weight drift | perplexity: base -> perturbed (relative change) |",
             "|---|---:|---|---:|---|---:|---:|---|"]
    for path in paths:
        run = json.loads(Path(path).read_text())
        for pert in run["perturbed"]:
            layers = [r for r in pert["layers"] if r["same_plan"]]
            hidden = max((r["hidden_rel_diff"] for r in layers), default=float("nan"))
            weight = max((r["max_weight_rel_diff"] for r in layers), default=float("nan"))
            ppl = "; ".join(f"{name} {base:.2f} -> {pert['ppl'][name]:.2f} ({pert['ppl'][name] / base - 1:+.1e})"
                            for name, base in run["base"]["ppl"].items())
            first = "none" if pert["first_plan_divergence"] is None else f"layer {pert['first_plan_divergence']}"
            kind = "products (float64)" if run["perturb"] == "products" else f"{run['perturb']} (eps {run['eps']:g})"
            lines.append(f"| {Path(path).stem} | {run['damp']} | {kind} | {pert['seed']} | {first} "
                         f"| {hidden:.1e} | {weight:.1e} | {ppl} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["summarize"]:
        print(summarize(sys.argv[2:]), end="")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--sparsity", type=sparsity_percent, default="35", help="percent of decoder-block parameters removed")
    parser.add_argument("--damp", type=float, default=0.01)
    parser.add_argument("--eps", type=float, default=1e-7)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0], help="one perturbed run per seed")
    parser.add_argument("--perturb", choices=["input", "weights", "products"], default="input",
                        help="input: the hidden states entering layer 0; weights: every parameter; products: "
                             "the refits' and statistics' batch products in float64 instead of float32 (their rounding)")
    parser.add_argument("--conditioning", action="store_true", help="eigenvalues of every damped system (slower)")
    parser.add_argument("--ppl", action="append", default=[], type=lambda s: tuple(s.split("=", 1)))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base, base_out = run(args, 0.0)
    summary = {"eps": args.eps, "perturb": args.perturb, "damp": args.damp, "base": base_out, "perturbed": [],
               "base_plans": {index: entry["plan"] for index, entry in base.layers.items()}}
    for seed in args.seeds:
        pert, pert_out = run(args, args.eps, seed)
        rows = compare(base, pert)
        first = next((r["layer"] for r in rows if not r["same_plan"]), None)
        summary["perturbed"].append({"seed": seed, "first_plan_divergence": first, **pert_out, "layers": rows})
        print(f"seed {seed}: first layer whose plan differs: {first}; ppl {pert_out['ppl']}", flush=True)
        del pert
    Path(args.out).write_text(json.dumps(summary, indent=1))
    for r in (summary["perturbed"][0]["layers"] if summary["perturbed"] else []):
        print(f"layer {r['layer']:2d} same_plan={r['same_plan']!s:5} heads^={r['heads_differ']} neurons^={r['neurons_differ']:4d} "
              f"w_rel={r['max_weight_rel_diff']:.2e} hidden_rel={r['hidden_rel_diff']:.2e} "
              f"score_rel={r['head_score_rel_diff']:.1e}/{r['neuron_score_rel_diff']:.1e} head_gap={r['min_head_gap']} neuron_gap={r['neuron_gap']} "
              f"js_margin={r['js_margin']} cand={r['candidates'][0]}")
    print("ppl base", base_out["ppl"], "perturbed", [p["ppl"] for p in summary["perturbed"]])


if __name__ == "__main__":
    main()
