"""The approval gate: no coding task pushes without a recorded ``approve`` for it.

``task.CodingTask`` is what a ``/copilot fix`` asks for (bound to its
instruction's hash and the MR head at request time); ``policy`` says who may
approve; ``gate.ApprovalGate`` records requests, decisions and refusals in
the state store and the trail, expires what nobody decided, and answers the
push step's question (``verify_push``).
"""

from gitlab_copilot_agent.approval.gate import (
    APPROVAL_REFUSED,
    APPROVAL_REQUESTED,
    DECISION,
    ApprovalGate,
    Decision,
    Refusal,
)
from gitlab_copilot_agent.approval.policy import ApprovalPolicy, ApproverCheck
from gitlab_copilot_agent.approval.task import CodingTask

__all__ = [
    "APPROVAL_REFUSED",
    "APPROVAL_REQUESTED",
    "DECISION",
    "ApprovalGate",
    "ApprovalPolicy",
    "ApproverCheck",
    "CodingTask",
    "Decision",
    "Refusal",
]
