"""The hard limits of a target-state document, in one place (the README quotes them).

Each is checked before the items it counts are validated, so a hostile document is refused after a look
at its sizes, and everything below the limits is validated in time linear in the document's size (the
checks for duplicates and dependency cycles use sets and a work list, never pairwise comparisons).
Each refusal names its path and the limit (`apps.a.services[0].config.ports: 1025 entries, more than 1024`).
A real device runs a handful of apps with a few services each: these sit far above any real target and far
below what could stall the agent (bench.validation measures it).
"""

MAX_DOCUMENT_BYTES = 1024 * 1024  # the whole document as JSON (UTF-8), as received and as normalised
MAX_APPS = 64
MAX_SERVICES_PER_APP = 128
MAX_PORTS_PER_SERVICE = 1024
MAX_ENVIRONMENT_ENTRIES = 1024  # per service
MAX_VOLUMES_PER_SERVICE = 128
MAX_NETWORKS_PER_SERVICE = 32  # depends_on is bounded by the services of its app
MAX_LABELS_PER_SERVICE = 256
MAX_COMMAND_ARGUMENTS = 1024
MAX_OPTION_ENTRIES = 256  # of each list or map among the container options (devices, dns, ulimits, ...)
MAX_STRING_LENGTH = 64 * 1024  # characters of an environment value, a label, a command argument
MAX_KEY_LENGTH = 1024  # characters of an environment variable's or a label's name
MAX_PORT_SPEC_LENGTH = 64  # "[ffff:...:ffff]:65535:65535/sctp" fits in 56
MAX_APP_NAME_LENGTH = 256
MAX_REGISTRIES = 32  # logins in the document's "registries"
MAX_CREDENTIAL_LENGTH = 4096  # characters of a registry user name or password (tokens can be long)
