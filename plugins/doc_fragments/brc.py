"""Documentation the BRC modules share, merged in by ansible-doc and ansible-lint on the
controller (ansible.cfg: doc_fragment_plugins); modules name them in
extends_documentation_fragment. Nothing on a managed host reads DOCUMENTATION.

- brc: every BRC module (author; full check mode: details, where a module has them, stay in it).
- brc.pins: the modules that work on one interface's pins; the argument spec of these options
  is module_utils/brc_common.common_spec() (interface, documented per module, is there too).
- brc.redis: the modules that log in to Redis with a toolkit user; the argument spec is
  module_utils/brc_common.redis_spec(). A module may override one key of an option
  (its description, say): Ansible merges the module's keys over the fragment's.
"""


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
author: BRC fleet toolkit
attributes:
  check_mode:
    support: full
"""

    PINS = r"""
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

    REDIS = r"""
options:
  redis_host:
    description: Address the module reaches Redis at on the host (ignored with O(redis_unix_socket)).
    type: str
    default: 127.0.0.1
  redis_port:
    description: Redis's TCP port, the one BRC watches.
    type: int
    default: 6379
  redis_unix_socket:
    description: Reach Redis through this Unix socket instead of TCP.
    type: path
  redis_user:
    description: ACL user the module authenticates as; empty for the default user.
    type: str
  redis_password:
    description: Password of O(redis_user) (or of the default user); empty when it has none.
    type: str
requirements:
  - redis-py (Debian package python3-redis)
"""
