"""FieldTrace benchmarks: targets are ratios against naive baselines measured in the same run."""
