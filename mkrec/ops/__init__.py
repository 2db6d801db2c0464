"""Operating mkrec on the machines it protects: what each run leaves behind (last-run.json, the
verify state of each set), retention, the end-of-run report, and `mkrec status` / `mkrec sets`."""
