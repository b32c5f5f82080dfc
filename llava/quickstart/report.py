"""The quickstart report: metrics table, timings, loss curves, accuracy per question type, images with own questions."""

from __future__ import annotations

import argparse
import json
import os
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llava.quickstart.evaluate import BINDING_TYPE, TARGET_TYPES, check_targets, format_table


def loss_history(trainer_state: Path) -> tuple[list[int], list[float]]:
    """(steps, losses) of the training-loss log lines of an HF `trainer_state.json`."""
    if not trainer_state.is_file():
        return [], []
    history = json.loads(trainer_state.read_text()).get("log_history", [])
    points = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    return [s for s, _ in points], [v for _, v in points]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(stages: Mapping[str, Path], out: Path) -> Path | None:
    """One panel per stage: training loss against optimizer step."""
    curves = {name: loss_history(path) for name, path in stages.items()}
    curves = {k: v for k, v in curves.items() if v[0]}
    if not curves:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.4), squeeze=False)
    for ax, (name, (steps, losses)) in zip(axes[0], curves.items()):
        ax.plot(steps, losses, lw=1.2)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_accuracy(vqa: Mapping[str, Any], out: Path) -> Path:
    """Accuracy per question type as bars, chance (majority answer) as black ticks."""
    plt = _pyplot()
    per_type = vqa["per_type"]
    names = list(per_type)
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 3.4))
    colors = ["tab:blue" if n in TARGET_TYPES else "tab:gray" for n in names]
    ax.bar(names, [per_type[n]["accuracy"] for n in names], color=colors)
    for i, n in enumerate(names):
        ax.hlines(per_type[n]["chance"], i - 0.4, i + 0.4, colors="k", lw=2)
        ax.text(i, per_type[n]["accuracy"] + 0.02, f"{per_type[n]['accuracy']:.2f}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy (black: chance)")
    ax.set_title(f"ShapesWorld VQA, held-out images (mean of the 4 blue types {vqa['mean4']:.3f})")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_questions(examples: Sequence[Mapping[str, Any]], image_dir: Path, out: Path) -> Path | None:
    """A grid of held-out images, each with the questions the model asked itself about it."""
    from PIL import Image

    examples = [e for e in examples if (image_dir / e["image"]).is_file()]
    if not examples:
        return None
    plt = _pyplot()
    cols = min(3, len(examples))
    rows = (len(examples) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, ex in zip(axes.flat, examples):
        ax.imshow(Image.open(image_dir / ex["image"]).convert("RGB"), interpolation="nearest")
        questions = [q.split("\n")[0] for q in ex["questions"]]
        text = "\n".join(textwrap.fill(f"Q: {q}", 44) for q in questions)
        ax.set_title(ex["image"], fontsize=9)
        ax.text(0.5, -0.04, text, transform=ax.transAxes, ha="center", va="top", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _timings_table(timings: Mapping[str, Any]) -> str:
    lines = ["| phase | seconds |", "|---|---|"]
    for k, v in timings.items():
        if isinstance(v, (int, float)):
            lines.append(f"| {k.removesuffix('_s')} | {v:.1f} |")
    return "\n".join(lines)


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path, base)


def write_report(run: str | Path, out: str | Path | None = None, started_at: float | None = None) -> Path:
    """Read `run/metrics.json` (+ stage trainer states, settings, foundation record) and write `run/report.md`.

    `started_at` (epoch seconds) sets the total wall time to now - started_at (the report is the last step)."""
    run = Path(run)
    out = Path(out) if out else run / "report.md"
    plots = out.parent / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    metrics = json.loads((run / "metrics.json").read_text())
    if (run / "timings.json").is_file():  # phases timed after the scores were computed
        metrics["timings"] = {**metrics.get("timings", {}), **json.loads((run / "timings.json").read_text())}
    settings = json.loads((run / "settings.json").read_text()) if (run / "settings.json").is_file() else {}
    if started_at is not None:
        metrics.setdefault("timings", {})["total_s"] = round(time.time() - started_at, 1)
        # the wall-time target is the default's, on 2 cores; a 1-thread run reports its time unchecked
        metrics["targets"] = check_targets(metrics, check_wall=int(settings.get("threads", 2)) >= 2)
        (run / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    parts = ["# SQ-LLaVA quickstart report (tiny models, ShapesWorld, CPU)", ""]
    if settings:
        parts += ["Settings: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()), ""]
    parts += ["## Metrics (held-out ShapesWorld images)", "", format_table(metrics), ""]
    vqa = metrics.get("vqa")
    if vqa:
        parts += ["Chance = the rate of the most frequent answer of that type on the eval set (a blind constant "
                  "guesser); size and relation are scored but not targeted.", ""]
    if metrics.get("timings"):
        parts += ["## Wall time per phase", "", _timings_table(metrics["timings"]), ""]
    foundation_record = run / "foundation.json"
    if foundation_record.is_file():
        f = json.loads(foundation_record.read_text())
        vis, lm, tok = f["metrics"]["vision"], f["metrics"]["lm"], f["metrics"]["tokenizer"]
        parts += ["## Foundation models", "",
                  f"- tokenizer: {tok['vocab_size']} pieces, v1_sq system prompt = {tok['tokens_v1_sq_system']} token",
                  f"- tiny CLIP: held-out image->text top-1 {vis['i2t_top1']:.3f} (batch {vis['batch']}), "
                  f"hard-negative accuracy {vis['hard_negative_acc']:.3f}, {vis['attempts']} attempt(s)",
                  f"- tiny LLaMA: {lm['params_m']}M parameters, held-out LM perplexity {lm['val_ppl']:.3f}",
                  f"- cache key `{f['key']}`", ""]
    stages = {"stage 1 (projector, plain captions)": run / "stage1" / "trainer_state.json",
              "stage 2 (LoRA + projector, v1_sq)": run / "stage2" / "trainer_state.json"}
    figure = plot_losses(stages, plots / "loss.png")
    if figure:
        parts += ["## Training loss", "", f"![loss]({_rel(figure, out.parent)})", ""]
    if vqa:
        figure = plot_accuracy(vqa, plots / "accuracy_per_type.png")
        parts += ["## Accuracy per question type", "", f"![accuracy]({_rel(figure, out.parent)})", ""]
    sq = metrics.get("sq")
    if sq:
        image_dir = Path(settings.get("data", run / "data")) / "images"
        figure = plot_questions(sq.get("examples", []), image_dir, plots / "self_questions.png")
        parts += ["## Self-questioning (the model's own VUSER questions)", ""]
        if figure:
            parts += [f"![questions]({_rel(figure, out.parent)})", ""]
        parts += [f"Questions per type: {sq.get('per_type', {})}; grounded per type: "
                  f"{sq.get('grounded_per_type', {})}.", ""]
        for ex in sq.get("examples", []):
            parts += [f"- `{ex['image']}`: *{ex['description']}*"]
            parts += [f"  - {q.splitlines()[0]}" for q in ex["questions"]]
        parts.append("")
    out.write_text("\n".join(parts))
    return out


ABLATION_METRICS = (
    ("VQA mean4", lambda m: m["vqa"]["mean4"]),
    ("POPE F1", lambda m: m["pope"]["mean_f1"]),
    ("POPE acc", lambda m: m["pope"]["mean_accuracy"]),
    ("caption CIDEr", lambda m: m["caption"]["CIDEr"]),
    ("SQ well-formed", lambda m: m["sq"]["well_formed"]),
    ("SQ grounded", lambda m: m["sq"]["grounded"]),
    ("SQ distinct", lambda m: m["sq"]["distinct"]),
)


def _mean_spread(values: Sequence[float]) -> str:
    """mean ± sample standard deviation (n in brackets when not every run has the metric)."""
    if not values:
        return "n/a"
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}"


def ablation_table(root: str | Path) -> str:
    """One row per (projector, template) over the runs under `root` (each with metrics.json + settings.json)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for metrics_file in sorted(Path(root).glob("*/metrics.json")):
        settings_file = metrics_file.parent / "settings.json"
        if not settings_file.is_file():
            continue
        settings = json.loads(settings_file.read_text())
        groups.setdefault((settings["projector"], settings["version"]), []).append(
            {"metrics": json.loads(metrics_file.read_text()), "settings": settings})
    head = "| projector | template | runs (seeds) | " + " | ".join(n for n, _ in ABLATION_METRICS) + " |"
    lines = [head, "|" + "---|" * (3 + len(ABLATION_METRICS))]
    for (projector, version), runs in sorted(groups.items()):
        cells = []
        for _, get in ABLATION_METRICS:
            values = []
            for r in runs:
                try:
                    values.append(float(get(r["metrics"])))
                except (KeyError, TypeError):
                    pass
            cells.append(_mean_spread(values))
        seeds = ",".join(str(r["settings"].get("seed")) for r in runs)
        lines.append(f"| {projector} | {version} | {len(runs)} ({seeds}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _seed_cells(metrics: dict, settings: dict) -> dict[str, Any]:
    """One seeds-table row's values (None where the run lacks the metric)."""
    vqa, pope, sq, demo = (metrics.get(k) or {} for k in ("vqa", "pope", "sq", "demo_sq"))
    per_type = vqa.get("per_type", {})
    splits = pope.get("splits", {})
    cells: dict[str, Any] = {"VQA mean4": vqa.get("mean4")}
    for qtype in TARGET_TYPES:
        cells[qtype] = per_type.get(qtype, {}).get("accuracy")
    cells["existence (binding)"] = per_type.get(BINDING_TYPE, {}).get("accuracy")
    for split in ("random", "popular", "adversarial"):
        cells[f"POPE F1 {split[:3]}"] = splits.get(split, {}).get("f1")
    cells.update({"SQ well-formed": sq.get("well_formed"), "SQ grounded": sq.get("grounded"),
                  "SQ distinct": sq.get("distinct"), "SQ types": sq.get("n_types"),
                  "demo well-formed": demo.get("well_formed"), "demo grounded": demo.get("grounded"),
                  "demo role markers": demo.get("role_markers")})
    wall = metrics.get("timings", {}).get("total_s")
    cells["wall (min)"] = wall / 60 if wall is not None else None
    failed = [t["name"] for t in metrics.get("targets", check_targets(metrics)) if not t["passed"]]
    cells["all checks"] = "yes" if not failed else "no: " + ", ".join(failed)
    return cells


def seeds_table(root: str | Path) -> str:
    """One row per quickstart run under `root` (scripts/quickstart_seeds.sh), then mean ± sd over the runs; the
    existence row's chance level is in the header."""
    runs = []
    for metrics_file in sorted(Path(root).glob("*/metrics.json")):
        settings_file = metrics_file.parent / "settings.json"
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        metrics = json.loads(metrics_file.read_text())
        runs.append((metrics_file.parent.name, settings, metrics, _seed_cells(metrics, settings)))
    if not runs:
        raise FileNotFoundError(f"no */metrics.json under {root}: run scripts/quickstart_seeds.sh first")
    names = list(runs[0][3])
    chance = runs[0][2].get("vqa", {}).get("per_type", {}).get(BINDING_TYPE, {}).get("chance")
    header = [n if n != "existence (binding)" or chance is None else f"existence (binding, chance {chance:.3f})"
              for n in names]
    lines = ["| run | seed | threads | " + " | ".join(header) + " |", "|" + "---|" * (3 + len(names))]

    def fmt(value: Any) -> str:
        if value is None:
            return "n/a"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    for name, settings, _, cells in runs:
        lines.append(f"| {name} | {settings.get('seed', '')} | {settings.get('threads', '')} | "
                     + " | ".join(fmt(cells[n]) for n in names) + " |")
    summary = []
    for n in names:
        values = [float(c[n]) for *_, c in runs if isinstance(c[n], (int, float))]
        summary.append(_mean_spread(values) if n != "all checks" else
                       f"{sum(c[n] == 'yes' for *_, c in runs)} of {len(runs)}")
    lines.append("| mean ± sd | | | " + " | ".join(summary) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m llava.quickstart.report", description=__doc__)
    p.add_argument("--run", help="quickstart output folder (metrics.json, settings.json, stage1/, stage2/)")
    p.add_argument("--out", default=None, help="report path (default RUN/report.md, or ROOT/ablation.md)")
    p.add_argument("--ablation", default=None, metavar="ROOT", help="summarise the runs under ROOT instead")
    p.add_argument("--seeds", default=None, metavar="ROOT",
                   help="one table of the runs under ROOT, with mean and spread (scripts/quickstart_seeds.sh)")
    p.add_argument("--started-at", type=float, default=None, help="epoch seconds the run started (total wall time)")
    p.add_argument("--print-table", action="store_true", help="print the metrics table")
    a = p.parse_args(argv)
    for root, summarise, name, title in ((a.ablation, ablation_table, "ablation.md", "SQ ablation"),
                                         (a.seeds, seeds_table, "seeds.md", "Quickstart runs across seeds")):
        if root:
            try:
                table = summarise(root)
            except FileNotFoundError as err:
                p.error(str(err))
            path = Path(a.out) if a.out else Path(root) / name
            path.write_text(f"# {title} (mean ± sd over seeds)\n\n{table}\n")
            print(table)
            return path
    if not a.run:
        p.error("give --run, --ablation or --seeds")
    path = write_report(a.run, a.out, a.started_at)
    if a.print_table:
        print(format_table(json.loads((Path(a.run) / "metrics.json").read_text())))
    print(f"report: {path}")
    return path


if __name__ == "__main__":
    main()
