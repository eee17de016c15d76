"""Options and shared fixtures for `pytest parity`.

  --impl module:Class    run the replay and property suites against another analyzer
                         (default: the MLX port, parity.analyzer.mlx_port:AlignmentStreamAnalyzer)
  --impl-arrays mlx|torch  the arrays that class takes (default: its `array_api`, else mlx)
  --update-golden        re-record fixtures/ from the PyTorch reference before the tests run

HYPOTHESIS_PROFILE=ci (default: fast, derandomized) or thorough (>= 10,000 examples).
"""

import os

import pytest
from hypothesis import HealthCheck, settings

DEFAULT_IMPL = "parity.analyzer.mlx_port:AlignmentStreamAnalyzer"

settings.register_profile(
    "ci", max_examples=120, derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", max_examples=10_000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    group = parser.getgroup("parity", "chatterbox-parity")
    group.addoption(
        "--impl", default=DEFAULT_IMPL, metavar="module:Class",
        help="analyzer class to verify against the golden fixtures and the reference "
        f"(default: {DEFAULT_IMPL})",
    )
    group.addoption(
        "--impl-arrays", choices=("mlx", "torch"), default=None,
        help="array type the --impl class takes (default: its `array_api` attribute, else mlx)",
    )
    group.addoption(
        "--update-golden", action="store_true",
        help="re-record the golden fixtures from the PyTorch reference, then run the tests on them",
    )


@pytest.hookimpl(trylast=True)  # after the terminal reporter exists
def pytest_configure(config):
    from parity.replay import load_class

    try:  # a bad --impl is a usage error, reported before anything runs
        config.parity_port_class = load_class(config.getoption("--impl"))
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    if config.getoption("--update-golden"):
        from parity.model.record import record_all as record_model_traces
        from parity.record import record_all

        names = record_all()
        traces = record_model_traces()
        config.get_terminal_writer().line(
            f"--update-golden: re-recorded {len(names)} analyzer fixtures and {len(traces)} model traces"
        )


def pytest_terminal_summary(terminalreporter, config):
    report = getattr(config, "parity_kl_report", None)
    if report is not None and report.steps:
        terminalreporter.write_sep("-", "MLX T3 vs PyTorch recordings (teacher-forced, post-CFG logits)")
        terminalreporter.write_line(str(report))


def pytest_report_header(config):
    return f"parity: port under test {config.getoption('--impl')}; hypothesis profile {settings._current_profile}"


@pytest.fixture(scope="session")
def port_class(request):
    return request.config.parity_port_class


@pytest.fixture(scope="session")
def port_arrays(request, port_class):
    from parity.replay import array_api_for

    return array_api_for(port_class, request.config.getoption("--impl-arrays"))
