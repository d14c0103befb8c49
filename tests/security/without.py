"""`python -m tests.security.without landlock|seccomp CMD...` runs CMD as on a kernel built
without that feature: a seccomp filter answers its system calls with ENOSYS, as such a kernel does."""
import errno
import os
import sys

from shared.sandbox import seccomp

FEATURES = {"landlock": ("landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"),
            "seccomp": ("seccomp",)}


def main() -> None:
    feature, command = sys.argv[1], sys.argv[2:]
    seccomp.no_new_privs()
    seccomp.install([seccomp.Rule(name, seccomp.errno_ret(errno.ENOSYS)) for name in FEATURES[feature]],
                    listener=False)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
