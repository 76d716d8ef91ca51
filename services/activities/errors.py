"""The activities service's errors (rendered as problem+json by `common.errors`)."""

from __future__ import annotations

from common.errors import Conflict, Forbidden, NotFound, Unprocessable


class ActivityNotFound(NotFound):
    title, slug = "Activity not found", "activity-not-found"


class MemberNotFound(NotFound):
    title, slug = "Member not found", "member-not-found"


class OrgNotFound(NotFound):
    title, slug = "Organization not found", "org-not-found"


class TalkNotFound(NotFound):
    title, slug = "Talk not found", "talk-not-found"


class ServiceHoursNotFound(NotFound):
    title, slug = "Service hours entry not found", "service-hours-not-found"


class ProgramNotFound(NotFound):
    title, slug = "Program not found", "program-not-found"


class RoleAssignmentNotFound(NotFound):
    title, slug = "Role assignment not found", "role-assignment-not-found"


class HelpRequestNotFound(NotFound):
    title, slug = "Help request not found", "help-request-not-found"


class AllocationNotFound(NotFound):
    title, slug = "Fund allocation not found", "allocation-not-found"


class TrainingSessionNotFound(NotFound):
    title, slug = "Training session not found", "training-session-not-found"


class ReadOnlyRole(Forbidden):
    title, slug = "Forbidden", "read-only-role"


class ActivityFull(Conflict):
    title, slug = "Activity is full", "activity-full"


class AlreadySignedUp(Conflict):
    title, slug = "Already signed up", "already-signed-up"


class HoursExceedDay(Conflict):
    title, slug = "Too many hours in a day", "hours-exceed-day"


class DuplicateEntry(Conflict):
    title, slug = "Already recorded", "duplicate-entry"


class AlreadyVerified(Conflict):
    title, slug = "Already verified", "already-verified"


class InvalidTransition(Conflict):
    title, slug = "Not allowed in this state", "invalid-transition"


class AllocationExists(Conflict):
    title, slug = "Allocation exists", "allocation-exists"


class Overspend(Conflict):
    title, slug = "Overspend", "overspend"


class InsufficientPoints(Conflict):
    title, slug = "Insufficient points", "insufficient-points"


class RoleAlreadyHeld(Conflict):
    title, slug = "Role already held", "role-already-held"


class InvalidEvidence(Unprocessable):
    title, slug = "Evidence not valid", "invalid-evidence"
