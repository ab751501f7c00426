"""The core that decides: pure functions over the API models, no I/O, no clock reads.

`engine.decide` is the state machine: `normalise`, then the phase's handler (`progress`,
`rollback`), then the finish (`traffic`). `strategies` say how a stage exposes the new version,
`stages` expands a risk into a stage plan, and `desired_workload` holds the replica arithmetic
and revisions. Everything here is unit-tested as tables and multi-tick stories with a virtual
clock.
"""
