"""Compare presence statistics: how well each separates present from absent targets.

    python scripts/presence_scores.py [--model unilseg-demo] [--data synthetic:100:1:absent=1]

Runs the predictor (the one inference path) over the data, computes every statistic of
`unilseg.inference.presence.STATISTICS` on each soft map, and prints per statistic: ROC AUC
(present vs absent, ties counted half), and the threshold that maximises N-acc + T-acc
with the N-acc and T-acc there (predicted present = statistic >= threshold); both from
`unilseg.eval.metrics` (`presence_auc`, `best_min_score`), as `unilseg eval` reports them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    from unilseg.batch import Item, predict_items
    from unilseg.data.manifest import load_image, load_mask
    from unilseg.data.sources import open_samples
    from unilseg.eval.metrics import best_min_score, presence_auc
    from unilseg.inference import load_predictor
    from unilseg.inference.presence import STATISTICS, presence_score

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="unilseg-demo")
    p.add_argument("--data", default="synthetic:100:1:absent=1")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    predictor = load_predictor(model=args.model, device="cpu", threads=args.threads)
    samples = open_samples(args.data)
    items = [Item(i, i, s.expressions[0]) for i, s in enumerate(samples)]
    scores: dict[str, list[float]] = {name: [] for name in STATISTICS}
    present: list[bool] = []
    for r in predict_items(predictor, items, 8, load=lambda i: load_image(samples[i])):
        pred = r.prediction
        present.append(bool(load_mask(samples[r.item.image], pred.mask.shape).any()))
        for name in STATISTICS:
            scores[name].append(presence_score(pred.prob, pred.mask, name))
    truth = np.array(present)
    print(f"{args.model} on {args.data}: {truth.sum()} present, {(~truth).sum()} absent")
    print("| statistic | ROC AUC | best threshold | N-acc | T-acc |")
    print("|---|---|---|---|---|")
    for name, values in scores.items():
        v = np.array(values)
        t, n_acc, t_acc = best_min_score(v, truth)
        print(f"| {name} | {presence_auc(v[truth], v[~truth]):.3f} | {t:.3f} | {n_acc:.3f} | {t_acc:.3f} |")


if __name__ == "__main__":
    main()
