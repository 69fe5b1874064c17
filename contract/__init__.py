"""The contract every other package stands on: the build spec, the repository's names, the
manifest, the request format, the preprocessing definition and the release matrix.

Layers, bottom to top (tests/test_layers.py enforces them): contract -> runners -> builders ->
clients -> serving -> benchmarks (the measuring room) -> load_tests -> report. A module imports
only from its own layer or below; this package imports none of the others.
"""
