"""The GitLab stand-in's merge-request and branch endpoints (what the Jira flow and the poller use).

Over a real loopback socket, with GitLab's REST v4 shapes; branches either in
memory or on a real git server (``agent_standins.git_server``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_standins.git_server import GitServer
from agent_standins.gitlab import DEFAULT_TOKEN, GitLabStandin
from agent_standins.servers import ServerHandle, run_in_thread

AUTH = {"PRIVATE-TOKEN": DEFAULT_TOKEN}
API = "/api/v4/projects/42"


@pytest.fixture(scope="module")
def gitlab() -> GitLabStandin:
    return GitLabStandin()


@pytest.fixture(scope="module")
def server(gitlab: GitLabStandin) -> Iterator[ServerHandle]:
    with run_in_thread(gitlab.app) as handle:
        yield handle


@pytest.fixture(autouse=True)
def _fresh(gitlab: GitLabStandin) -> None:
    gitlab.reset()


def post(server: ServerHandle, path: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{API}{path}", headers=AUTH, json=body)


def get(server: ServerHandle, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{API}{path}", headers=AUTH, params=params)


class TestBranches:
    def test_create_then_exists(self, gitlab: GitLabStandin, server: ServerHandle) -> None:
        created = post(server, "/repository/branches", branch="agent/PROJ-1", ref="main")
        assert created.status_code == 201
        assert created.json()["name"] == "agent/PROJ-1"
        assert gitlab.branches(42) == {"agent/PROJ-1": created.json()["commit"]["id"]}
        again = post(server, "/repository/branches", branch="agent/PROJ-1", ref="main")
        assert (again.status_code, again.json()) == (400, {"message": "Branch already exists"})

    @pytest.mark.parametrize(
        ("body", "answer"),
        [
            ({"ref": "main"}, {"error": "branch is missing"}),
            ({"branch": "x"}, {"error": "ref is missing"}),
            ({"branch": "x", "ref": "nope"}, {"message": "Invalid reference name: nope"}),
        ],
    )
    def test_refusals(self, server: ServerHandle, body: dict[str, Any], answer: Any) -> None:
        refused = post(server, "/repository/branches", **body)
        assert (refused.status_code, refused.json()) == (400, answer)

    def test_reset_forgets_created_branches(
        self, gitlab: GitLabStandin, server: ServerHandle
    ) -> None:
        post(server, "/repository/branches", branch="tmp", ref="main")
        gitlab.reset()
        assert gitlab.branches(42) == {}


class TestCreateMergeRequest:
    @pytest.mark.parametrize(
        ("title", "draft"),
        [
            ("Draft: Add x", True),
            ("[Draft] Add x", True),
            ("(draft) Add x", True),
            ("Draft - Add x", True),
            ("draft Add x", True),
            ("Drafting the plan", False),
            ("Add x", False),
        ],
    )
    def test_title_prefix_decides_draft(
        self, gitlab: GitLabStandin, server: ServerHandle, title: str, draft: bool
    ) -> None:
        post(server, "/repository/branches", branch="b1", ref="main")
        created = post(
            server, "/merge_requests", source_branch="b1", target_branch="main", title=title
        )
        assert created.status_code == 201
        mr = created.json()
        assert (mr["iid"], mr["title"], mr["draft"], mr["state"]) == (8, title, draft, "opened")
        assert mr["web_url"].endswith("/group/app/-/merge_requests/8")
        assert mr["author"]["username"] == gitlab.user["username"]
        assert get(server, "/merge_requests/8").json()["draft"] is draft

    @pytest.mark.parametrize(
        ("body", "status", "answer"),
        [
            ({"target_branch": "main", "title": "t"}, 400, {"error": "source_branch is missing"}),
            (
                {"source_branch": "ghost", "target_branch": "main", "title": "t"},
                400,
                {"message": ["Source branch does not exist"]},
            ),
            (
                {"source_branch": "feature/search", "target_branch": "main", "title": "t"},
                409,
                {
                    "message": [
                        "Another open merge request already exists for this source branch: !7"
                    ]
                },
            ),
        ],
    )
    def test_refusals(
        self, server: ServerHandle, body: dict[str, Any], status: int, answer: Any
    ) -> None:
        refused = post(server, "/merge_requests", **body)
        assert (refused.status_code, refused.json()) == (status, answer)

    def test_on_a_git_server_the_branch_and_the_head_are_real(self, tmp_path: Path) -> None:
        """The branch is made in the real repository, and the new MR's ``sha`` follows it."""
        gitlab = GitLabStandin()
        with GitServer(tmp_path / "git", token="gt-standin-token-5e1d0c9b8a7f") as git:
            git.create_repo("group/lib", {"README.md": "hi\n"})
            gitlab.add_project(43, "group/lib", git=git)
            with run_in_thread(gitlab.app) as handle:
                url = f"{handle.url}/api/v4/projects/43"
                branch = httpx.post(
                    f"{url}/repository/branches",
                    headers=AUTH,
                    json={"branch": "agent/LIB-1", "ref": "main"},
                ).json()
                assert branch["commit"]["id"] == git.head("group/lib", "agent/LIB-1")
                mr = httpx.post(
                    f"{url}/merge_requests",
                    headers=AUTH,
                    json={"source_branch": "agent/LIB-1", "target_branch": "main", "title": "x"},
                ).json()
                assert mr["sha"] == branch["commit"]["id"]
                moved = git.move_branch("group/lib", "agent/LIB-1")
                again = httpx.get(f"{url}/merge_requests/{mr['iid']}", headers=AUTH).json()
                assert (again["sha"], again["diff_refs"]["head_sha"]) == (moved, moved)
                bad = httpx.post(
                    f"{url}/repository/branches", headers=AUTH, json={"branch": "y", "ref": "nope"}
                )
                assert bad.status_code == 400


class TestListMergeRequests:
    def test_state_updated_after_and_order(
        self, gitlab: GitLabStandin, server: ServerHandle
    ) -> None:
        post(server, "/repository/branches", branch="b2", ref="main")
        created = post(
            server, "/merge_requests", source_branch="b2", target_branch="main", title="New"
        ).json()
        listing = get(server, "/merge_requests", state="opened", order_by="updated_at", sort="asc")
        assert [m["iid"] for m in listing.json()] == [7, created["iid"]]
        assert listing.headers["x-total"] == "2"
        newer = get(server, "/merge_requests", updated_after="2026-05-02T00:00:00Z").json()
        assert [m["iid"] for m in newer] == [created["iid"]]
        gitlab.set_merge_request_state(42, created["iid"], "merged")
        assert [m["iid"] for m in get(server, "/merge_requests", state="opened").json()] == [7]
        assert [m["iid"] for m in get(server, "/merge_requests", state="merged").json()] == [8]

    def test_a_new_note_touches_its_merge_request(
        self, gitlab: GitLabStandin, server: ServerHandle
    ) -> None:
        """What a poller's ``updated_after`` relies on to see new ``/copilot`` notes."""
        before = get(server, "/merge_requests", updated_after="2026-05-02T00:00:00Z").json()
        post(server, "/merge_requests/7/notes", body="/copilot fix it")
        after = get(server, "/merge_requests", updated_after="2026-05-02T00:00:00Z").json()
        gitlab.reset()
        again = get(server, "/merge_requests", updated_after="2026-05-02T00:00:00Z").json()
        assert [[m["iid"] for m in found] for found in (before, after, again)] == [[], [7], []]

    @pytest.mark.parametrize(
        "params", [{"state": "bogus"}, {"updated_after": "yesterday"}, {"order_by": "title"}]
    )
    def test_bad_parameters_are_400(self, server: ServerHandle, params: dict[str, str]) -> None:
        assert get(server, "/merge_requests", **params).status_code == 400

    def test_notes_sort_descending(self, server: ServerHandle) -> None:
        notes = get(server, "/merge_requests/7/notes", sort="desc", order_by="created_at").json()
        assert [n["body"] for n in notes] == ["Please take a look.", "added 1 commit"]
