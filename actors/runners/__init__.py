"""Runners: one per workflow kind, each turning a validated payload into a
:class:`~domain.execution.RunOutcome` (``heartbeat``, ``container``, ``ray_task``).

The contract they share is :mod:`actors.runners.context`.
"""
