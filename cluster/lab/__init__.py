"""The lab: peer's local test bed, demos, fault injection and benchmarks, in one library.

Every program in cluster/ is a few lines that call a module here (see cluster/README.md for which is what):
  base        paths, logging, running commands, waiting on a condition
  testbed     the machine's services: packages, dockerd, the registries, the test app images
  node        one node of the single-node demo and benchmark: its nginx and peer.yml
  mesh        a mesh of N peerd without apps (cluster/testbed-mesh; the mesh tests and bench-membership)
  cluster     a cluster of N peerd with apps, nginx and DNS at the stand-in (up, down, status, fault)
  the rest    one module per program: demo, demo_single, chaos, flood, bench_*, profile_order, package_check, test
Everything it starts listens on loopback addresses only.
"""
