"""The optimizer lab: benchmark problems, a tuning protocol, results and metrics.

    problems   the 2-D test functions and the learning problems, fully specified
    protocol   equal tuning budget per optimizer, best setting rerun over seeds
    results    one JSON file per run, DeepOBS's layout (resumable, mergeable)
    metrics    final/best test metrics with seed spread, time to target (AlgoPerf),
               learning-rate sensitivity, performance profiles (Dolan & Moré)

``ermlab lab run`` is the command line over the same functions.
"""
