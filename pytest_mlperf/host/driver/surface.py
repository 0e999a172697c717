"""What the driver's mixins (search_driver.SearchDriving, gate_driver.GateDriving) use of `LoadGenDriver`, declared
once for the type checker: its session and the methods that turn a probe or a round into a LoadGen run of the case.
At run time this class is empty; session.LoadGenDriver inherits the mixins and defines all of it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from pytest_mlperf.contract.test_request import TestRequest
    from pytest_mlperf.host.driver.cases import CaseRun
    from pytest_mlperf.host.driver.loadgen_driver import MlperfSession
    from pytest_mlperf.host.driver.sut_handle import SUTHandle
    from pytest_mlperf.host.pool.recipe import LaunchRecipe


class DriverSurface:
    """LoadGenDriver's `session`, `execute`, `test_request`, `log_dir`, `keep` and `case_label`."""

    if TYPE_CHECKING:  # LoadGenDriver's
        session: MlperfSession

        def execute(self, sut: SUTHandle, recipe: LaunchRecipe, scenario: str, mode: str, log_dir: Path, *,
                    server_target_qps: float | None = None, fixed: TestRequest | None = None,
                    calibrate: bool = True, label: str = "", in_round: bool = False,
                    target_source: str | None = None) -> CaseRun: ...

        def test_request(self, sut: SUTHandle, scenario: str, mode: str, log_dir: Path, total: int
                         ) -> TestRequest: ...

        def log_dir(self, suffix: str = "") -> Path: ...

        def keep(self, case: CaseRun) -> None: ...

        def case_label(self, sut: SUTHandle, scenario: str, mode: str, label: str = "") -> str: ...
