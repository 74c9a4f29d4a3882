"""Options every BRC module that works on one interface's pins shares; their
argument spec is module_utils/brc_common.common_spec()."""


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  pin_root:
    description: Directory on a bpffs under which C(<interface>/) holds the pins of each interface.
    type: path
    default: /sys/fs/bpf/brc
  src_dir:
    description:
      - Directory on the host with the BRC C sources (the repository's C(bpf/), shipped by M(brc_sources)).
      - Its C(brc_contract.h) gives the map names and value layouts.
    type: path
    default: /usr/local/lib/brc/bpf
"""
