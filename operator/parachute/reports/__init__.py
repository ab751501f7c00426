"""User reports: support tooling tells Parachute that users report an issue with a Rollout.

The playbook's triggers: a single user report is watched, 10+ reports of the same issue are
evaluated now. Support tooling posts a report to the operator's reports endpoint (`server`,
off by default, with a bearer token from a Secret); each accepted report is kept in the API
server as one Event on the Rollout (`record`), so neither a restart nor a change of leader
loses one. The reconcile counts the reports per issue key in a sliding window (`counting`,
`tally`), shows the counts in `status.userReports`, and the built-in `user-reports` metric is
judged on them through the same verdicts as every other metric (`parachute.analysis.evaluate`).

The request's checks (`request`) and the counting (`tally`) are pure; `record`, `server` and
`counting` do the I/O.
"""
