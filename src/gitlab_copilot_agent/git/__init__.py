"""Git for coding tasks: the real ``git``, the token only in the environment, patches checked.

- ``runner``: ``GitRunner`` (clone, commit, push; audited as
  ``gitlab.api.clone_repo`` / ``gitlab.api.push_branch``), ``GitCredentials``,
  ``PushAuthorization`` (what a push must present), ``GitError``;
- ``patches``: ``validate_patch`` / ``apply_patch`` / ``patch_stats`` and the
  refusal reasons (``does_not_apply``, ``path_outside_repo``, ``symlink_escape``,
  ``protected_path``, ``too_large``, ``check_failed``);
- ``remote``: which clone URLs and branch names are accepted;
- ``errors``: how a git failure is classified;
- ``process``: how every child process is run (deadline, minimal environment,
  scrubbed stderr).
"""
