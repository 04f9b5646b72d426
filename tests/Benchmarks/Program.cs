// Benchmark entry point: `hv-bench <suite>`; each suite registers itself in Suites.
return Hypervisor.Benchmarks.Suites.Run(args);
