"""The core that decides: pure functions over the API models, no I/O, no clock reads.

`stages` expands a risk into a stage plan, `workload` holds the replica arithmetic and
revisions, `engine.decide` is the state machine. Everything here is unit-tested as tables
and multi-tick stories with a virtual clock.
"""
