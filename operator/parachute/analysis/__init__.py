"""Measuring: metric providers (Prometheus) and the evaluation of a Rollout's metrics.

The judging itself is pure and lives in `parachute.plan.verdicts`.
"""
