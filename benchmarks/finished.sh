# Sourced by the benchmark scripts whose tables benchmarks/variants_table.py writes.
# finished RUN_DIR OUT: whether a cell has run, by its run folder or, in a checkout without run
# folders (they are not committed), by its record in OUT/results.jsonl (each record keeps the argv
# that ran it, --output RUN_DIR included), so a rerun resumes instead of training every cell again.
finished() {
  [ -f "$1/metrics.json" ] || grep -qF "\"$1\"" "$2/results.jsonl" 2>/dev/null
}
