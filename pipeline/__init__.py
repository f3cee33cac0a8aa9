"""One thin module per DVC stage: read params.yaml, call one `nmt` function."""
