"""Every key the agent writes to its state store, in one place.

==================================  =====================================  ==================
key                                 value                                  lives
==================================  =====================================  ==================
``copilot:approval:<task>``         the pending approval (the task)        expiry + 1 h
``copilot:decision:<task>``         the gate's decision for the task       7 days
``copilot:pushed:<task>``           the approval was used by a push        7 days
``copilot:result:<task>``           the task's result                      7 days
``copilot:lock:mr:<project>:<mr>``  who holds the MR (one task at a time)  renewed while held
``copilot:lastresult:mr:<p>:<mr>``  the MR's last task result (a copy)        7 days
``copilot:dedup:note:<p>:<note>``   a command note already handled         1 day
``copilot:lock:jira:<KEY>``         who works on a Jira issue now          renewed while held
``copilot:dedup:jira:<KEY>``        a Jira issue already taken up          ``JIRA_DEDUP_TTL_S``
``copilot:dedup:jiracomment:<K>:<c>`` a Jira decision comment handled     7 days
``copilot:poll:note:<p>:<note>``    a note the GitLab poller dispatched    1 day
``copilot:poll:review:<p>:<mr>:<sha>`` an MR head the poller dispatched    7 days
``copilot:poll:watermark:<name>``   where a poller's next listing starts   30 days
``copilot:job:<task>:spec``         a Kubernetes Job's task spec           deadline + 1 h
``copilot:job:<task>:to_agent``     the pod's messages (a list)            deadline + 1 h
``copilot:job:<task>:to_task``      the agent's answers (a list)           deadline + 1 h
``copilot:job:<task>:agent``        the agent still waits for the pod      15 s, renewed
==================================  =====================================  ==================
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "copilot:"
APPROVAL_PREFIX: Final = f"{PREFIX}approval:"
DECISION_TTL_S: Final = 7 * 86_400
RESULT_TTL_S: Final = 7 * 86_400
DEDUP_TTL_S: Final = 86_400
APPROVAL_GRACE_S: Final = 3600
"""A pending approval outlives its expiry by this much, so a late approve is told
``expired`` (not ``unknown_task``) and the sweeper can still close it."""


def approval(task_id: str) -> str:
    return f"{APPROVAL_PREFIX}{task_id}"


def decision(task_id: str) -> str:
    return f"{PREFIX}decision:{task_id}"


def push_marker(task_id: str) -> str:
    return f"{PREFIX}pushed:{task_id}"


def result(task_id: str) -> str:
    return f"{PREFIX}result:{task_id}"


def mr_lock(project_id: int, mr_iid: int) -> str:
    return f"{PREFIX}lock:mr:{project_id}:{mr_iid}"


def note_seen(project_id: int, note_id: int) -> str:
    return f"{PREFIX}dedup:note:{project_id}:{note_id}"


def mr_last_result(project_id: int, mr_iid: int) -> str:
    return f"{PREFIX}lastresult:mr:{project_id}:{mr_iid}"


def jira_lock(issue_key: str) -> str:
    return f"{PREFIX}lock:jira:{issue_key}"


def jira_seen(issue_key: str) -> str:
    return f"{PREFIX}dedup:jira:{issue_key}"


def jira_comment_seen(issue_key: str, comment_id: str) -> str:
    return f"{PREFIX}dedup:jiracomment:{issue_key}:{comment_id[:64]}"


def poll_note_seen(project_id: int, note_id: int) -> str:
    # Not note_seen: that one is the coding workflow's own first-sighting check.
    return f"{PREFIX}poll:note:{project_id}:{note_id}"


def poll_review_seen(project_id: int, mr_iid: int, head_sha: str) -> str:
    return f"{PREFIX}poll:review:{project_id}:{mr_iid}:{head_sha}"


def poll_watermark(name: str) -> str:
    return f"{PREFIX}poll:watermark:{name}"


WATERMARK_TTL_S: Final = 30 * 86_400


JOB_KEYS_GRACE_S: Final = 3600
AGENT_HEARTBEAT_TTL_S: Final = 15.0


def job_spec(task_id: str) -> str:
    return f"{PREFIX}job:{task_id}:spec"


def job_to_agent(task_id: str) -> str:
    return f"{PREFIX}job:{task_id}:to_agent"


def job_to_task(task_id: str) -> str:
    return f"{PREFIX}job:{task_id}:to_task"


def job_agent(task_id: str) -> str:
    return f"{PREFIX}job:{task_id}:agent"
