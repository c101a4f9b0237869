"""taskcache benchmarks (issue #4): ``python -m bench [--quick | --smoke]``.

Every ratio is measured side by side in one run: rounds alternate ours, baseline, ours,
baseline, ...; medians and the min-max spread are reported. See ``docs/benchmarks.md``.
"""
