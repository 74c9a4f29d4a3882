# netfault moved to lab/ (shared with bench/ and the lab); a test that still imports it
# as tools.netfault gets that same module (lab/ is on sys.path: tests/conftest.py).
import netfault  # noqa: F401
