"""avoviirscollector: VIIRS SDR collection for a volcano observatory (see README.md).

Every dependency is pinned here and only here; the Dockerfile and the Makefile install from this file.
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "posttroll==1.16.0",
    "pytroll-collectors[trollstalker]==0.22.0",
    "watchdog==7.1.0",
    "pyzmq==27.3.0",
    "pycurl==7.49.0",
    "supervisor==4.3.0",
    "PyYAML==6.0.3",
    "trollsift==1.0.2",
    "h5py==3.16.0",
    "numpy==2.5.5",
    "pyorbital==1.14.0",
    "requests==2.34.2",
    "tqdm==4.70.1",
    "prometheus_client==0.26.0",  # monitor's /metrics
]

TEST_REQUIRES = [
    "pytest==9.2.0",
    "pytest-timeout==2.4.0",
    "pytest-xdist==3.8.0",  # make test runs two workers, each in a loopback-only network namespace of its own
    "execnet==2.1.2",
    "hypothesis==6.170.15",
    "aiosmtpd==1.4.6",
    "ruff==0.17.6",
]

# Only for the tests: posttroll 1.5 as the workers in the field run it (installs on Python < 3.12 only), used to
# prove that what leaves the suite decodes there. The Makefile builds .venv-legacy from this list.
LEGACY_CLIENT_REQUIRES = [
    "posttroll==1.5.1",
    "pyzmq==27.3.0",
    "six==1.17.0",
]

# The daemons and jobs start through entry.py, which holds SIGTERM and SIGINT before their heavy imports (a stop at
# any moment of a start is a clean one); the two commands an operator types do not need it.
CONSOLE_SCRIPTS = [
    "avoviirscollector = avoviirscollector.cli:main",
    "msg_publisher = avoviirscollector.entry:msg_publisher",
    "avo_cron = avoviirscollector.entry:avo_cron",
    "avo_log_forwarder = avoviirscollector.entry:avo_log_forwarder",
    "avo_wait_for = avoviirscollector.entry:avo_wait_for",
    "mirror_gina = avoviirscollector.entry:mirror_gina",
    "cleanup = avoviirscollector.entry:cleanup",
    "tle_refresh = avoviirscollector.entry:tle_refresh",
    "avo_status = avoviirscollector.status:main",
    "task_broker = avoviirscollector.entry:task_broker",
    "monitor = avoviirscollector.entry:monitor",
]

setup(
    name="avoviirscollector",
    version="3.0.0.dev0",
    description="Mirror VIIRS SDR granules from GINA NRT, announce them on ZeroMQ and queue product tasks",
    python_requires=">=3.12",
    packages=find_packages(include=["avoviirscollector", "avoviirscollector.*"]),
    package_data={"avoviirscollector": ["etc/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES, "legacy-client": LEGACY_CLIENT_REQUIRES},
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
