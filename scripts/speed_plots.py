"""The docs' speed and memory figures and tables, from the benchmarks' --json output.

    python scripts/speed_plots.py [--results benchmarks/results] [--out docs/img]

Reads what `python benchmarks/NAME.py ... --json benchmarks/results/NAME.json` wrote
(`benchmarks/_common.py`: save_results) and draws one PNG per input into --out:

- throughput.json -> speed_throughput.png: seconds per expression against the number of
  expressions on one image, fp32 and bf16, beside a single forward (the image is encoded once);
- onnx_runtime.json -> speed_onnx_runtime.png: one forward and 1 image x K instructions per
  runtime (torch fp32 / bf16, ONNX Runtime fp32 / int8), grouped bars;
- startup.json -> speed_startup.png: one cold CLI call's wall time and peak RSS per weights format.

Each input's Markdown tables go to stdout (slim_runtime.json's too, which has no figure), so a
page's tables and figures come from the same file; notes (a missing input, a file written) go to
stderr. Figures are 700x400 px with no software tag or timestamp: the same input gives the same bytes.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import onnx_runtime  # noqa: E402 (the benchmarks' own tables; they import no torch at the top)
import startup  # noqa: E402
import throughput  # noqa: E402

FIGSIZE, DPI = (7.0, 4.0), 100
RUNTIME_COLORS = {"torch-fp32": "C0", "torch-bf16": "C1", "ort-fp32": "C2", "ort-int8": "C3"}

Cell = Callable[[dict], str]


def pyplot():
    """matplotlib's pyplot on the Agg backend (imported here, so `--help` needs no matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- what a document says about where and how it was measured -------------------------------------------------

def machine_line(doc: dict) -> str:
    """'CPU model, N cores, AVX-512 + VNNI + BF16 + AMX' from a document's machine fields."""
    m = doc["machine"]
    flags = m.get("flags", {})
    if flags.get("avx512f"):
        extras = [name for flag, name in (("avx512_vnni", "VNNI"), ("avx512_bf16", "BF16"), ("amx_tile", "AMX"))
                  if flags.get(flag)]
        isa = " + ".join(["AVX-512", *extras])
    else:
        isa = "no AVX-512"
    return f"{m['cpu']}, {m['cores']} cores, {isa}"


def shown_command(doc: dict) -> str:
    """The benchmark's command line, with OMP_NUM_THREADS where it was set, without its --json PATH (where the
    numbers went is no part of how they were measured)."""
    omp = doc["machine"].get("omp_num_threads")
    words, kept = shlex.split(doc["command"]), [f"OMP_NUM_THREADS={omp}"] if omp else []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--json":
            skip = True
        elif not word.startswith("--json="):
            kept.append(word)
    return shlex.join(kept)


def versions(doc: dict) -> str:
    m = doc["machine"]
    parts = [doc["date"][:10]]
    parts += [f"{lib} {m[lib]}" for lib in ("torch", "onnxruntime") if m.get(lib)]
    if m.get("commit"):
        parts.append(f"unilseg {m['commit']}")
    return ", ".join(parts)


def source_line(doc: dict, path: Path) -> str:
    return f"<!-- {path.name} -->\n`{shown_command(doc)}` on {machine_line(doc)} ({versions(doc)})"


# --- Markdown tables ---------------------------------------------------------------------------------------------

def table(columns: list[tuple[str, Cell]], rows: list[dict]) -> str:
    lines = ["| " + " | ".join(heading for heading, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    return "\n".join(lines)


def num(key: str, unit: str = "", digits: int = 2) -> Cell:
    """A cell: row[key] with `digits` decimals and a unit; empty where the value is None."""
    return lambda r: "" if r.get(key) is None else f"{r[key]:.{digits}f}{unit}"


def text(key: str) -> Cell:
    return lambda r: str(r[key])


def rows_of(doc: dict, name: str) -> list[dict]:
    return [r for r in doc["rows"] if r.get("table") == name]


def throughput_tables(doc: dict) -> list[str]:
    out = [throughput.expressions_table(rows_of(doc, "expressions"))]
    out += [f"{r['images']} images x 1 expression, {r['precision']}; per image in one process / steady single "
            f"forward: {r['marginal_vs_steady_forward']:.2f}\n\n" + throughput.images_table(r)
            for r in rows_of(doc, "images")]
    return out


def onnx_runtime_tables(doc: dict) -> list[str]:
    out = [onnx_runtime.runtimes_table(runtimes)] if (runtimes := rows_of(doc, "runtimes")) else []
    if ious := rows_of(doc, "int8_iou"):  # the benchmark prints these as a list
        out.append(table([("golden case", text("case")), ("int8 mask IoU vs torch fp32", num("iou", digits=3)),
                          ("fp32 mask (px)", text("fp32_pixels"))], ious))
    if cold := rows_of(doc, "cold_cli"):
        out.append(onnx_runtime.cold_table(cold))
    return out


def startup_tables(doc: dict) -> list[str]:
    return ["\n".join([startup.TABLE_HEADER, *map(startup.table_line, doc["rows"])])]


def slim_runtime_tables(doc: dict) -> list[str]:
    def size(r: dict) -> str:
        torch = f" (torch, its CUDA libraries and triton: {r['torch_mb']:.0f} MB)" if r.get("torch_mb") else ""
        return f"{r['mb']:.0f} MB{torch}"

    authors = doc["args"].get("authors")
    out = [table([("venv", text("venv")), ("size on disk", size)], rows_of(doc, "size")),
           table([("runtime", text("runtime")), ("venv", text("venv")), ("wall (s)", num("wall_s")),
                  ("peak RSS (GB)", num("peak_rss_gb")), ("vs torch fp32", num("vs_torch_fp32", "x")),
                  (f"vs the authors' script ({authors} s)", num("vs_authors", "x"))], rows_of(doc, "cold"))]
    out += [f"ORT {r['variant']}: masks byte-equal between the slim and the full venv: "
            f"{'yes' if r['byte_equal'] else 'NO'}" for r in rows_of(doc, "masks")]
    return out


# --- figures -----------------------------------------------------------------------------------------------------

def new_figure(doc: dict, title: str, detail: str, panels: int = 1, right: float = 0.98):
    """A 700x400 figure: title, the machine and run under it, the command at the foot -> (figure, axes)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, panels, figsize=FIGSIZE, dpi=DPI, squeeze=False)
    fig.suptitle(title, fontsize=11, y=0.975)
    fig.text(0.5, 0.89, f"{machine_line(doc)}; {detail}", ha="center", fontsize=8, color="0.3")
    command = shown_command(doc)
    command = command if len(command) <= 118 else command[:117] + "…"
    fig.text(0.01, 0.015, f"{command}\n{versions(doc)}", fontsize=7, family="monospace", color="0.4")
    fig.subplots_adjust(left=0.09, right=right, top=0.8, bottom=0.2, wspace=0.35)
    for ax in axes[0]:
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=8)
    return fig, list(axes[0])


def save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})  # no tag: bytes depend on the input alone
    pyplot().close(fig)


def plot_throughput(doc: dict, path: Path) -> None:
    rows = rows_of(doc, "expressions")
    args = doc["args"]
    threads = args.get("threads") or doc["machine"].get("torch_threads")
    fig, (ax,) = new_figure(doc, "One image, k expressions: the image is encoded once",
                            f"{threads} thread(s), {args.get('clock', 'wall')} clock, best of {args.get('repeat')}",
                            right=0.7)  # the legend goes right of the plot: inside, the dashed lines cross it
    top = 0.0
    for i, precision in enumerate(dict.fromkeys(r["precision"] for r in rows)):
        color, mine = f"C{i}", [r for r in rows if r["precision"] == precision]
        line = sorted((r for r in mine if r["decoder_batch"] == 1), key=lambda r: r["expressions"])
        xs, ys = [r["expressions"] for r in line], [r["per_expression_s"] for r in line]
        ax.plot(xs, ys, "o-", color=color, label=f"{precision}: set_image + predict(k)")
        for x, y in zip(xs, ys):  # below the line: above it, at k = 8, sits the one-decoder-batch marker
            ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, -13), ha="center", fontsize=7.5)
        single = mine[0]["single_forward_s"]
        ax.axhline(single, color=color, ls="--", lw=1, label=f"{precision}: one single forward")
        for r in mine:
            if r["decoder_batch"] > 1:
                ax.plot(r["expressions"], r["per_expression_s"], "D", color=color, mfc="white",
                        label=f"{precision}: {r['expressions']} in one decoder batch")
                ax.annotate(f"{r['per_expression_s']:.2f}", (r["expressions"], r["per_expression_s"]),
                            textcoords="offset points", xytext=(-8, -3), ha="right", fontsize=7.5)
        top = max(top, single, *ys, *(r["per_expression_s"] for r in mine))
    ax.set_xticks(sorted({r["expressions"] for r in rows}))
    ax.set_xlabel("expressions on one image (k)", fontsize=9)
    ax.set_ylabel(("CPU " if args.get("clock") == "cpu" else "") + "seconds per expression", fontsize=9)
    ax.set_ylim(0, top * 1.2)
    ax.legend(fontsize=7.5, frameon=False, loc="center left", bbox_to_anchor=(1.02, 0.5))
    save(fig, path)


def runtime_label(runtime: str) -> str:
    kind, _, variant = runtime.partition("-")
    return f"{'ORT' if kind == 'ort' else kind} {variant}"


def plot_onnx_runtime(doc: dict, path: Path) -> None:
    rows = rows_of(doc, "runtimes")
    fig, (ax,) = new_figure(doc, "torch and ONNX Runtime: one image, 480 x 480",
                            f"one process per runtime, best of {doc['args'].get('repeat')}")
    cases = [("forward_s", "one forward"), ("texts_s", f"1 image x {rows[0]['texts']} instructions")]
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [c + (i - (len(rows) - 1) / 2) * width for c in range(len(cases))]
        bars = ax.bar(xs, [r[key] for key, _ in cases], width * 0.92, label=runtime_label(r["runtime"]),
                      color=RUNTIME_COLORS.get(r["runtime"], f"C{i + 4}"))
        ax.bar_label(bars, fmt="%.2f", fontsize=7.5, padding=2)
    ax.set_xticks(range(len(cases)), [label for _, label in cases], fontsize=9)
    ax.set_ylabel("seconds", fontsize=9)
    ax.margins(y=0.12)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    save(fig, path)


def plot_startup(doc: dict, path: Path) -> None:
    rows = doc["rows"]
    args = doc["args"]
    fig, axes = new_figure(doc, "Start-up: one cold CLI call, process start to mask written",
                           f"input {args.get('size')} px, fp32, median of {args.get('repeat')}", panels=2)
    labels = [f"{r['weights']}\n({r['size_gb']:.2f} GB)" for r in rows]
    colors = [f"C{i}" for i in range(len(rows))]
    for ax, key, title, unit in ((axes[0], "cold_wall_s", "wall time", "seconds"),
                                 (axes[1], "peak_rss_gb", "peak RSS", "GB")):
        bars = ax.bar(labels, [r[key] for r in rows], width=0.55, color=colors)
        ax.bar_label(bars, fmt=f"%.2f {'s' if unit == 'seconds' else unit}", fontsize=8, padding=2)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(unit, fontsize=9)
        ax.margins(y=0.15)
    save(fig, path)


# name -> (figure or None, Markdown tables)
INPUTS: dict[str, tuple[Callable[[dict, Path], None] | None, Callable[[dict], list[str]]]] = {
    "throughput": (plot_throughput, throughput_tables),
    "onnx_runtime": (plot_onnx_runtime, onnx_runtime_tables),
    "startup": (plot_startup, startup_tables),
    "slim_runtime": (None, slim_runtime_tables),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks/results", help="folder of NAME.json files")
    p.add_argument("--out", type=Path, default=ROOT / "docs/img", help="folder for the PNGs")
    args = p.parse_args(argv)
    found = 0
    for name, (plot, tables) in INPUTS.items():
        path = args.results / f"{name}.json"
        if not path.is_file():
            print(f"speed_plots: no {path}, skipped", file=sys.stderr)
            continue
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("name") != name:
            p.error(f"{path} holds the results of {doc.get('name')!r}, not {name!r}")
        found += 1
        print("\n\n".join([source_line(doc, path), *tables(doc)]) + "\n")
        if plot is not None:
            png = args.out / f"speed_{name}.png"
            plot(doc, png)
            print(f"speed_plots: wrote {png}", file=sys.stderr)
    if not found:
        print(f"speed_plots: no results in {args.results}", file=sys.stderr)
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
