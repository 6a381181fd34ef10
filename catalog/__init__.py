"""The example catalog: agents on deterministic local models, used by the demo, the tests
and the benchmarks. A team's own catalog is a TOML file in the same format."""
