"""The batch API: many (image, instruction) pairs -> mask files and a results log.

    from unilseg import Predictor, load_model
    from unilseg.batch import OutputOptions, plan_items, run_batch

    predictor = Predictor(load_model("unilseg-demo"))
    options = OutputOptions(fmt="png", overlay="jpg")
    items = plan_items([("a.jpg", "the sky", None), ("a.jpg", "the red car", None)], "masks/", options)
    report = run_batch(predictor, items, options, results="masks/results.jsonl", skip_existing=True)
    for item, why in report.failed: ...

`plan_items` names every output (`{image stem}__{slug}.png`, collisions numbered) before
any work, and fails an item whose output would leave the output directory (`..`, a
symlink, an absolute path unless `allow_absolute=True`); `run_batch` encodes each image
once for all its instructions, writes each item's files atomically (mask last), logs a
row per item, and returns what failed instead of stopping. `run_job(predictor, items, step)`
is the one loop underneath every job kind (the step: `MaskStep`, `labels.LabelStep`, the
video's frames); `predict_items` runs the mask step for callers that keep masks in memory.
"""
from unilseg.batch.inputs import IMAGE_EXTENSIONS, Request, expand_images, read_batch_manifest, read_expression_file
from unilseg.batch.plan import (
    Item,
    OutputOptions,
    check_output_dir,
    output_stem,
    parse_shard,
    plan_items,
    results_name,
    safe_stem,
    select_shard,
    slugify,
)
from unilseg.batch.results import ResultsLog, read_results, results_row, row_of
from unilseg.batch.run import (
    BatchReport,
    ItemResult,
    MaskStep,
    Step,
    describe,
    predict_items,
    result_row,
    run_batch,
    run_job,
    split_done,
)

__all__ = [
    "IMAGE_EXTENSIONS", "BatchReport", "Item", "ItemResult", "MaskStep", "OutputOptions", "Request", "ResultsLog",
    "Step", "check_output_dir", "describe", "expand_images", "output_stem", "parse_shard", "plan_items",
    "predict_items", "read_batch_manifest", "read_expression_file", "read_results", "result_row", "results_name",
    "results_row", "row_of", "run_batch", "run_job", "safe_stem", "select_shard", "slugify", "split_done",
]
