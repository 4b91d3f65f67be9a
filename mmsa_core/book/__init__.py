"""What the book's chapters call: a handful of functions that keep the notebooks short.

A chapter reads like this::

    from mmsa_core import book, viz
    book.setup()                                              # seeds, 1 thread, deterministic kernels
    data = book.load(dataset, full)                           # the embedded default or an MMSA pickle
    run = book.trained("baseline", epochs=epochs, dataset=dataset, full=full, device=device)
    book.metrics_table(run.records, protocol="A", level=0.0)  # a rounded table
    viz.show_fig(viz.curve(book.at_rates(run.records, "MAE")), "fig-mae")

Every function is reached as ``book.<name>``; it lives in the module of its concern:

=====================  ==========  ===================================================================================
module                 chapters    what
=====================  ==========  ===================================================================================
:mod:`.runs`           all         set-up, the chapter's dataset, presets, :func:`trained` and its run cache and lock
:mod:`.tables`         all         metrics of runs as rounded tables and curves, several runs side by side
:mod:`.data`           1, 2        samples, the MMSA file's keys, a linear probe per modality, what the protocols do
:mod:`.testbed`        2           the embedded testbed: its knobs, the truth beside the data, the oracle
:mod:`.promma`         3, 4, 5     inside a trained ProMMA: stages, MME decisions, prompts (MPD), DPW and MPDC
:mod:`.lnln`           6, 7        inside a trained LNLN: DMC, reconstruction, hyper-modality attention, ablations
:mod:`.grid`           8, 9        the reference grid of ``reproduce``: records, histories, provenance, a live cell
:mod:`.benchmarks`     10          the benchmark JSON files of the performance appendix
=====================  ==========  ===================================================================================

This package sits at the top of ``mmsa_core``: it may import any of it; nothing there imports it. Inside it,
:mod:`.runs` and :mod:`.tables` are the base the other modules import.
"""

from . import benchmarks, data, grid, lnln, promma, runs, tables, testbed
from .benchmarks import BENCHMARK_RESULTS, benchmark_files, benchmark_table, lnln_epochs, lnln_ratios, speedups, text_paths
from .data import KEY_MEANINGS, achieved, examples, format_table, modes_table, probe, token_table
from .grid import (REFERENCE_GRID, REFERENCE_GRIDS, REFERENCE_WALK, ablation_reference, grid_findings, reference_check, mechanism_table, mechanisms, Reference, grid_summary, live_cell, mode_means, optimism, reference, reference_acc2,
                   reference_dir, robustness_curves)
from .lnln import (LNLN_ABLATIONS, DiscriminatorRecorder, ablation_switches, attention_summary, completeness_scores, hyper_attention,
                   lnln_ablation, lnln_diagnostics, lnln_parts, one_modality_sweep, reconstruction_crossover,
                   reconstruction_curves, spearman, training_trace)
from .promma import (PAIR_NAMES, PROMMA_VARIANTS, dpw_weights, imputation_compare, initial_model,
                     loss_history, mme_decisions, mpdc_table, orth_table, orth_terms, prompt_cosines, prompt_norms,
                     prompt_points, promma_variant, same_pretrained_backbone, stage_history, stage_model,
                     stages_table)
from .runs import (NOT_TRAINING_CODE, TrainedRun, code_fingerprint, config, data_config, dataset_family, hub_models,
                   is_checkout, is_synth, load, model_device, preserved_rng, preset_name, preset_path, read_json, require_hub,
                   run_dir, run_lock, runs_dir, setup, trained)
from .testbed import KNOB_MEANINGS, generated_vs_truth, knobs, oracle_table, predictability_summary, truth_of
from .tables import (PERCENT_PREFIXES, ablation_table, acc2_name, at_rates, headline_metrics, label_runs, metric_steps,
                     metric_summary, metrics_table, modes_compare, percent_rounded)

__all__ = [*runs.__all__, *tables.__all__, *data.__all__, *promma.__all__, *lnln.__all__, *grid.__all__,
           *benchmarks.__all__, *testbed.__all__]
