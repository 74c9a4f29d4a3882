"""The serve blocks compile and verify together with the observe-mode headers
they will be wired into (see harness_integration.c and bpf/SERVE.md)."""


def test_blocks_wire_into_observe_types(harness):
    h = harness("harness_integration.c")
    assert h.fn("it_ingress").fd >= 0
