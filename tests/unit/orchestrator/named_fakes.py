"""The fake backend under more names, so that a run has several distinct runners to start (a backend's class declares
the name it is registered under)."""

from __future__ import annotations

from tests.fakes.fake_backend import FakeBackend


class FakeTwo(FakeBackend):
    name = "fake2"


class FakeThree(FakeBackend):
    name = "fake3"


class FakeFour(FakeBackend):
    name = "fake4"


REGISTRATIONS = ",".join(["fake=tests.fakes.fake_backend:FakeBackend",
                          "fake2=tests.unit.orchestrator.named_fakes:FakeTwo",
                          "fake3=tests.unit.orchestrator.named_fakes:FakeThree",
                          "fake4=tests.unit.orchestrator.named_fakes:FakeFour"])
NAMES = ["fake", "fake2", "fake3", "fake4"]
