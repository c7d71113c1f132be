"""The mapping engine: profiles of what each machine costs, an estimate of the network, and
a planner that picks edge-only, cloud-only or a split point and codec for every input.

Runtime code (the edge imports it): no torch, and nothing from training, bench or corpus.
docs/planner.md has the profile format, the cost model, the estimator and the CLI.
``simulate`` replays a workload (``workload``: per-input measured times) on a network trace
for every policy (paper 001's simulator); ``experiments`` runs paper 001's Fig. 4 and
Table I on it (``splitasr simulate``).
"""

from splitasr.planner.estimator import NetworkEstimate, NetworkEstimator, RequestTiming, ServerLoad
from splitasr.planner.policy import Budget, Decision, Option, Planner, PowerModel, plan
from splitasr.planner.profiles import Profile, ProfileError, load_profile, load_wer_table, save_profile

__all__ = [
    "Budget",
    "Decision",
    "NetworkEstimate",
    "NetworkEstimator",
    "Option",
    "Planner",
    "PowerModel",
    "Profile",
    "ProfileError",
    "RequestTiming",
    "ServerLoad",
    "load_profile",
    "load_wer_table",
    "plan",
    "save_profile",
]
