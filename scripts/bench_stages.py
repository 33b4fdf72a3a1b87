"""Stage benchmark: each pruning stage's time as a multiple of one dense forward pass.

    python scripts/bench_stages.py embedded        # SmolLM2-135M from resources/models/
    python scripts/bench_stages.py llama7b-width   # a few decoder layers at LLaMA-7B width
    python scripts/bench_stages.py tiny            # seconds; for the test suite

The floor of every stage that streams calibration tokens through the model is one
dense forward over those tokens; it is measured in the same run, first and again last
(`floor_end`), and every stage is reported as a ratio to the mean of the two, so that a
machine whose speed drifts during the run (a shared host) moves the ratios less; both
floors are reported. Each stage runs in its own spawned process (the model is
loaded before the clock starts), so the peak resident memory of a stage is that
process's, not a sum over stages. Files are written to a temporary folder to measure
the statistics and checkpoint sizes. The LLaMA-7B-width stack (hidden 4096, MLP
11008, 32 heads, random weights built in code) is extrapolated per decoder layer to
32 layers. Results: results/bench/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # runs from a clone without installing


@dataclass(frozen=True)
class BenchSpec:
    """What to load and how many calibration tokens to stream."""

    name: str
    model: str  # "embedded", "llama7b-width" or "tiny"
    samples: int
    seq_len: int
    batch_size: int = 8
    layers: int = 2  # decoder layers of the built-in-code models
    checkpoint: str = str(REPO / "resources" / "models" / "smollm2-135m")
    task_dir: str = str(REPO / "resources" / "data" / "tasks")
    task_limit: int = 30  # items per task: the default config's evaluation.limit
    threads: int = 2


PRESETS = {
    "embedded": BenchSpec("embedded", "embedded", samples=64, seq_len=128),
    "llama7b-width": BenchSpec("llama7b-width", "llama7b-width", samples=8, seq_len=128, batch_size=4, layers=2),
    "tiny": BenchSpec("tiny", "tiny", samples=8, seq_len=32, batch_size=4, layers=2, task_limit=0),
}
SEVEN_B = {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32, "num_key_value_heads": 32,
           "vocab_size": 32000, "layers": 32}


def build_model(spec: BenchSpec):
    """(model, tokenizer or None), float32 on CPU, in eval mode; weights seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if spec.model == "embedded":
        from structprune.model.loading import load_checkpoint

        if not Path(spec.checkpoint, "config.json").is_file():
            raise SystemExit(f"{spec.checkpoint} is missing: build it with `make run` or "
                             f"`snakemake --cores 2 resources/models/smollm2-135m` first")
        model, tokenizer = load_checkpoint(spec.checkpoint, torch.float32)
        return model.eval(), tokenizer
    width = SEVEN_B if spec.model == "llama7b-width" else {
        "hidden_size": 48, "intermediate_size": 64, "num_attention_heads": 6, "num_key_value_heads": 2, "vocab_size": 160}
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=width["vocab_size"], hidden_size=width["hidden_size"], intermediate_size=width["intermediate_size"],
        num_hidden_layers=spec.layers, num_attention_heads=width["num_attention_heads"],
        num_key_value_heads=width["num_key_value_heads"], max_position_embeddings=2048, initializer_range=0.02,
    )
    return LlamaForCausalLM(config).eval(), None


def calibration_tokens(spec: BenchSpec, vocab: int):
    import torch

    generator = torch.Generator().manual_seed(1)
    return torch.randint(3, vocab, (spec.samples, spec.seq_len), generator=generator)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


# --------------------------------------------------------------------------- stages (one process each)

def stage_floor(spec, model, tokenizer, ids, workdir):
    """One dense forward over the calibration tokens (logits included), batch by batch."""
    import torch

    with torch.no_grad():
        for start in range(0, ids.shape[0], spec.batch_size):
            model(ids[start : start + spec.batch_size], use_cache=False)
    return {"tokens": ids.numel()}


def stage_calibrate(spec, model, tokenizer, ids, workdir):
    from structprune.calibration.statistics import collect_statistics
    from structprune.io.checkpoint import save_tensors

    stats, tokens = collect_statistics(model, ids, spec.batch_size, progress=False)
    path = Path(workdir) / "stats.safetensors"
    save_tensors(stats, path, {"tokens": tokens})
    return {"stats_mb": path.stat().st_size / 2**20}


def _stats(workdir):
    from structprune.io.checkpoint import load_tensors

    return load_tensors(Path(workdir) / "stats.safetensors")


def stage_score(spec, model, tokenizer, ids, workdir):
    from structprune.io.checkpoint import save_tensors
    from structprune.pruning.scores import score_model

    scores = score_model(model, "distribution", _stats(workdir), {})
    save_tensors(scores, Path(workdir) / "scores.safetensors", {})
    return {}


def _prune(spec, model, recipe, workdir, **inputs):
    from structprune.io.checkpoint import save_checkpoint
    from structprune.pruning.engine import prune_with_recipe

    result = prune_with_recipe(model, recipe, 0.2, batch_size=spec.batch_size, progress=False, **inputs)
    out = {"dense": "cached" if inputs.get("dense_stream") else "live"} if recipe.refits else {}
    if spec.model != "tiny":
        started = time.time()
        folder = Path(workdir) / f"ckpt-{recipe.flow}-{recipe.reconstruct}"
        save_checkpoint(result.model, _tokenizer_for_save(), folder, {"stage": "bench"})
        out["save_s"] = round(time.time() - started, 2)
        out["checkpoint_mb"] = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
    return out


def _tokenizer_for_save():
    class NoTokenizer:  # random-weight models have no tokenizer to save
        def save_pretrained(self, folder):
            pass

    return NoTokenizer()


def stage_prune_dense(spec, model, tokenizer, ids, workdir):
    """Plan and slice from the score file (the paper's dense flow, no reconstruction)."""
    from structprune.io.checkpoint import load_tensors
    from structprune.spec.recipe import Recipe

    scores = load_tensors(Path(workdir) / "scores.safetensors")
    return _prune(spec, model, Recipe("distribution"), workdir, scores=scores)


def stage_sequential(spec, model, tokenizer, ids, workdir):
    """Scores on the pruned stream, layer by layer (Wanda-sp's flow)."""
    from structprune.spec.recipe import Recipe

    return _prune(spec, model, Recipe("distribution", options={"mlp": "output", "redundancy": "none"},
                                      flow="sequential"), workdir, samples=ids)


def stage_dense_stream(spec, model, tokenizer, ids, workdir):
    """The dense stream recorded once per calibration set (recover.dense_cache), which the
    refit and recovery stages then read, as every refit job of the workflow does."""
    from structprune.calibration.densestream import record_dense_stream

    folder = _dense_folder(workdir)
    record_dense_stream(model, ids, spec.batch_size, folder, {"stage": "bench"}, progress=False)
    return {"stream_mb": sum(p.stat().st_size for p in folder.iterdir()) / 2**20}


def _dense_folder(workdir) -> Path:
    return Path(workdir) / "dense"


def _cached(workdir) -> dict:
    """The recorded dense stream, if the dense_stream stage ran before (else the refit runs it)."""
    folder = _dense_folder(workdir)
    return {"dense_stream": str(folder)} if folder.is_dir() else {}


def stage_refit(spec, model, tokenizer, ids, workdir):
    """Ours-best: sequential flow with the post-cut block refit."""
    from structprune.spec.recipe import Recipe

    recipe = Recipe("distribution", options={"mlp": "output", "redundancy": "none"}, flow="sequential",
                    reconstruct="refit", damp=1.0)
    return _prune(spec, model, recipe, workdir, samples=ids, **_cached(workdir))


def stage_recovery(spec, model, tokenizer, ids, workdir):
    """The paper's pre-pruning recovery ("w/ remedy"), sequential flow."""
    from structprune.spec.recipe import Recipe

    return _prune(spec, model, Recipe("distribution", flow="sequential", reconstruct="paper"), workdir, samples=ids,
                  **_cached(workdir))


def stage_recovery_live(spec, model, tokenizer, ids, workdir):
    """The same recovery running the dense layers itself (recover.dense_cache: false)."""
    from structprune.spec.recipe import Recipe

    return _prune(spec, model, Recipe("distribution", flow="sequential", reconstruct="paper"), workdir, samples=ids)


def stage_perplexity(spec, model, tokenizer, ids, workdir):
    from structprune.evaluation.perplexity import perplexity

    result = perplexity(model, ids.reshape(-1), spec.seq_len, batch_size=spec.batch_size, progress=False)
    return {"tokens": result["windows"] * spec.seq_len}


def stage_zero_shot(spec, model, tokenizer, ids, workdir):
    from structprune.data.tasks import TASKS
    from structprune.evaluation.zeroshot import zero_shot

    files = {name: Path(spec.task_dir) / f"{name}.jsonl" for name in TASKS}
    files = {name: path for name, path in files.items() if path.is_file()}
    _, forwarded = zero_shot(model, tokenizer, files, spec.task_limit, spec.batch_size)
    return {"tokens": forwarded, "tasks": sorted(files)}


STAGES = {
    "floor": stage_floor, "floor_end": stage_floor, "calibrate": stage_calibrate, "score": stage_score, "prune_dense": stage_prune_dense,
    "sequential": stage_sequential, "dense_stream": stage_dense_stream, "refit": stage_refit, "recovery": stage_recovery,
    "recovery_live": stage_recovery_live,
    "perplexity": stage_perplexity, "zero_shot": stage_zero_shot,
}


def run_stage(spec: BenchSpec, stage: str, workdir: str, queue) -> None:
    """In a spawned process: load, then time one stage."""
    import torch

    torch.set_num_threads(spec.threads)
    model, tokenizer = build_model(spec)
    ids = calibration_tokens(spec, model.config.vocab_size)
    before = peak_rss_mb()
    started = time.time()
    extra = STAGES[stage](spec, model, tokenizer, ids, workdir)
    seconds = time.time() - started - extra.pop("save_s", 0.0)
    queue.put({"stage": stage, "seconds": round(seconds, 3), "rss_after_load_mb": round(before, 1),
               "peak_rss_mb": round(peak_rss_mb(), 1), **extra})


def measure(spec: BenchSpec, stages: list[str]) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory(prefix="structprune-bench-") as workdir:
        for stage in stages:
            queue = context.Queue()
            process = context.Process(target=run_stage, args=(spec, stage, workdir, queue))
            process.start()
            process.join()
            if process.exitcode != 0:
                raise SystemExit(f"stage {stage} failed (exit {process.exitcode}); see the traceback above")
            rows.append(queue.get())
            print(f"{spec.name}: {rows[-1]}", flush=True)
    return rows


def seven_b_layer_mb() -> float:
    """One LLaMA-7B decoder layer's float32 weights (q, k, v, o; gate, up, down; two norms)."""
    h, i = SEVEN_B["hidden_size"], SEVEN_B["intermediate_size"]
    return (4 * h * h + 3 * h * i + 2 * h) * 4 / 2**20


def projected_peak_mb(row: dict, layers: int) -> float:
    """A stage's peak RSS with 32 layers: the measured peak plus the weights of the layers not
    built; calibration also keeps every layer's statistics until it writes them. The working
    set of the layer being processed does not grow with depth (layers run one at a time)."""
    missing = SEVEN_B["layers"] - layers
    stats = row.get("stats_mb", 0) / layers * missing if row["stage"] == "calibrate" else 0
    return row["peak_rss_mb"] + missing * seven_b_layer_mb() + stats


def summarise(spec: BenchSpec, rows: list[dict], command: str | None = None) -> dict:
    """Ratios to the floor, throughputs, and the per-layer extrapolation of the 7B-width stack;
    `command` is what made the rows (default: the preset alone)."""
    floors = [r for r in rows if r["stage"] in ("floor", "floor_end")]
    floor_seconds = sum(r["seconds"] for r in floors) / len(floors)
    floor_tps = floors[0]["tokens"] / floor_seconds
    for row in rows:
        row["ratio_to_floor"] = round(row["seconds"] / floor_seconds, 2)
        if "tokens" in row and row["seconds"] > 0:
            row["tokens_per_s"] = round(row["tokens"] / row["seconds"], 1)
            row["share_of_raw_throughput"] = round(row["tokens_per_s"] / floor_tps, 3)
    recorded_spec = asdict(spec)
    for key in ("checkpoint", "task_dir"):  # from resources/ on: the record names no machine's folders
        parts = Path(recorded_spec[key]).parts
        if "resources" in parts:
            recorded_spec[key] = str(Path(*parts[parts.index("resources"):]))
    out = {"spec": recorded_spec, "command": command or f"python scripts/bench_stages.py {spec.name}", "floor_seconds": round(floor_seconds, 3), "floor_tokens_per_s": round(floor_tps, 1), "stages": rows,
           "torch_threads": spec.threads, "cpu_count": os.cpu_count()}
    if spec.model == "llama7b-width":
        out["projection_32_layers"] = {
            row["stage"]: {"seconds_per_layer": round(row["seconds"] / spec.layers, 2),
                           "seconds_32_layers": round(row["seconds"] / spec.layers * SEVEN_B["layers"], 1),
                           "peak_rss_mb_32_layers": round(projected_peak_mb(row, spec.layers)),
                           **({"stats_mb_32_layers": round(row["stats_mb"] / spec.layers * SEVEN_B["layers"])}
                              if "stats_mb" in row else {})}
            for row in rows
        }
    return out


def markdown(summary: dict) -> str:
    spec = summary["spec"]
    lines = [
        f"# Stage benchmark: {spec['name']}",
        "",
        f"{spec['samples']} x {spec['seq_len']} calibration tokens, batch {spec['batch_size']}, "
        f"{summary['torch_threads']} torch threads on {summary['cpu_count']} CPUs. Floor: one dense forward "
        f"over those tokens, timed first and last (`floor`, `floor_end`); ratios are to their mean, "
        f"{summary['floor_seconds']:.2f} s ({summary['floor_tokens_per_s']} tokens/s). Made by `{summary['command']}`.",
        "",
        "| stage | seconds | x floor | tokens/s | share of raw | peak RSS MB | RSS after load MB | file MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["stages"]:
        size = r.get("stats_mb", r.get("checkpoint_mb", r.get("stream_mb")))
        stage = f"{r['stage']} ({r['dense']} dense stream)" if "dense" in r else r["stage"]
        lines.append(
            f"| {stage} | {r['seconds']:.2f} | {r['ratio_to_floor']:.2f} | {r.get('tokens_per_s', '')} | "
            f"{r.get('share_of_raw_throughput', '')} | {r['peak_rss_mb']:.0f} | {r['rss_after_load_mb']:.0f} | "
            f"{'' if size is None else f'{size:.1f}'} |"
        )
    if "projection_32_layers" in summary:
        lines += ["", f"Per decoder layer, extrapolated to LLaMA-7B's 32 layers ({spec['layers']} measured):", "",
                  "| stage | s / layer | s, 32 layers | peak RSS MB, 32 layers (float32) | statistics MB, 32 layers |",
                  "|---|---:|---:|---:|---:|"]
        for stage, p in summary["projection_32_layers"].items():
            lines.append(f"| {stage} | {p['seconds_per_layer']} | {p['seconds_32_layers']} | {p['peak_rss_mb_32_layers']} | "
                         f"{p.get('stats_mb_32_layers', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset (the floor always runs, first and last)")
    parser.add_argument("--out", default=str(REPO / "results" / "bench"))
    parser.add_argument("--layers", type=int, help="decoder layers of a built-in-code model")
    parser.add_argument("--samples", type=int, help="calibration samples (the memory a stage holds per token shows "
                        "as the difference between two runs); the files are named <preset>-<samples>x<seq_len>")
    parser.add_argument("--from-json", help="rebuild <out>/<name>.{json,md} from this file's recorded rows, measuring nothing")
    args = parser.parse_args(argv)
    if args.from_json:
        recorded = json.loads(Path(args.from_json).read_text())
        write(summarise(BenchSpec(**recorded["spec"]), recorded["stages"], recorded.get("command")), Path(args.out))
        return
    spec = PRESETS[args.preset]
    if args.layers:
        spec = BenchSpec(**{**asdict(spec), "layers": args.layers})
    if args.samples:
        spec = BenchSpec(**{**asdict(spec), "samples": args.samples, "name": f"{spec.name}-{args.samples}x{spec.seq_len}"})
    stages = ["floor"] + [s for s in args.stages.split(",") if s and s not in ("floor", "floor_end")] + ["floor_end"]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; known: {list(STAGES)}")
    if spec.model != "embedded" or not Path(spec.task_dir).is_dir() or spec.task_limit == 0:
        stages = [s for s in stages if s != "zero_shot"]  # tasks need a tokenizer and the task files
    options = [args.preset] + [f"--{name} {value}" for name, value in
                                (("samples", args.samples), ("layers", args.layers), ("stages", args.stages))
                                if value and not (name == "stages" and value == parser.get_default("stages"))]
    write(summarise(spec, measure(spec, stages), "python scripts/bench_stages.py " + " ".join(options)), Path(args.out))


def write(summary: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    name = summary["spec"]["name"]
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
