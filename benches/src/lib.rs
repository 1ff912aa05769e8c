//! Benchmarks for LabBridge (see `benches/`).
