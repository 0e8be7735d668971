"""avoviirscollector: mirror VIIRS SDR granules from GINA NRT, announce them on ZeroMQ, queue product tasks.

See README.md for the operator's manual and SPEC-level behaviour of each program.
"""
