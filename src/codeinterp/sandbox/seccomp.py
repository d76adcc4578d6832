"""Seccomp filters for the sandbox (a deny-list and an allow-list profile): a classic-BPF
builder and a ctypes loader.

No dependencies beyond the standard library: :func:`build_program` assembles the raw
``struct sock_filter`` array (8 bytes per instruction) once, in the parent process, and
:func:`install` loads it in the (forked) sandbox process with
``seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog)``.
:func:`supported` says whether this machine can do it, and why not (for ``doctor``).

This is a *deny-list* in the spirit of Docker's default profile: everything is allowed
unless it is on the list, because sandboxed code runs arbitrary Python with C extensions
(numpy, pandas, ...) whose syscall needs we cannot enumerate.  The list removes the kernel
attack surface and the escape/administration primitives an unprivileged process never
needs.  It is one layer: namespaces, capabilities, cgroups and ``no_new_privs`` do the rest
(for example raw ``AF_INET`` sockets are refused for lack of ``CAP_NET_RAW``, not here).

The *allow-list* profile (``SeccompProfile(allowed_syscalls=...)``, :func:`profile` with
``"allow"``) keeps every rule below and changes only the last step: a syscall that is neither
refused nor on ``allowed_syscalls`` fails with ENOSYS instead of being allowed, and the
argument checks are emitted only for syscalls on the list.  The shipped list
(:data:`codeinterp.sandbox.seccomp_allowlist.ALLOWED`) is what the preinstalled libraries and
the sandbox test suite were traced calling (``scripts/derive-seccomp-allowlist``).  ENOSYS
rather than EPERM (Docker's default answer) for the unlisted ones: a syscall the trace never
saw is often a newer interface with an older equivalent, and code that probes for one (glibc
for ``faccessat2`` and ``clone3``, for instance) falls back on ENOSYS only and reports any
other errno as a failure; ENOSYS is also what a kernel without the call says, and what steps
2, 3, 5 and 6 already answer.  The refusals that mean "not permitted" (steps 4 and 7-11) keep
EPERM and EAFNOSUPPORT under both profiles, so hostile code sees the same answers from either.

Filter order, top to bottom (first match wins)::

    1. arch != the build arch (AUDIT_ARCH_X86_64 / _AARCH64)   -> KILL_PROCESS
       A 64-bit process can still enter the kernel through the i386 ABI (``int 0x80``);
       those syscalls have other numbers, so the table below would be wrong for them.
    2. nr == -1                                                  -> ERRNO(ENOSYS)
       (the "no syscall" value tracers use; keep it harmless rather than fatal)
       x86_64 only: nr & __X32_SYSCALL_BIT (0x40000000)          -> KILL_PROCESS
       x32 is a third ABI with its own numbering reachable from any x86_64 process.
    3. nr > highest number in the shipped table                  -> ERRNO(ENOSYS)
       Syscalls newer than this file are unknown, so we cannot judge them; ENOSYS is what
       an older kernel returns and makes libc fall back to older interfaces.
    4. profile.denied_syscalls                                   -> ERRNO(EPERM)
    5. profile.unavailable_syscalls                              -> ERRNO(ENOSYS)
       Host-wide kernel resources with a userspace fallback: AIO contexts (fs.aio-max-nr
       is one counter for the whole machine) and inotify (the read-only binds share their
       inodes with every other session, so a watch sees another session's imports).
       ENOSYS is what a kernel without them says; libraries then use threads or polling.
    6. clone3                                                    -> ERRNO(ENOSYS)
       Its flags live in a struct in user memory that BPF cannot read, so it cannot be
       checked like ``clone``; glibc (and Python) fall back to ``clone`` on ENOSYS.
    7. clone with a CLONE_NEW* namespace flag in arg0            -> ERRNO(EPERM)
    8. personality(p) unless p in {0, 8, 0x20000, 0x20008, 0xffffffff} -> ERRNO(EPERM)
       (PER_LINUX, PER_LINUX32, UNAME26 variants and the query; notably refuses
       READ_IMPLIES_EXEC and ADDR_NO_RANDOMIZE)
    9. ioctl(fd, TIOCSTI | TIOCLINUX, ...)                       -> ERRNO(EPERM)
       (terminal input injection into whatever owns the tty)
   10. socket / socketpair with a family outside
       profile.allowed_socket_families (arg0)                    -> ERRNO(EAFNOSUPPORT)
       Blocks AF_PACKET, AF_NETLINK, AF_VSOCK, AF_ALG, AF_BLUETOOTH, ... and their bugs.
   11. mmap(.., MAP_HUGETLB), memfd_create(.., MFD_HUGETLB),
       shmget(.., SHM_HUGETLB)                                   -> ERRNO(EPERM)
       Pages of the host's huge page pool (vm.nr_hugepages) are not charged to the
       memory cgroup: a session could take the whole pool, beyond its memory limit.
       Transparent huge pages (madvise) are ordinary memory and stay allowed.
   12. everything else                                           -> ALLOW
       (allow-list profile: nr in profile.allowed_syscalls -> ALLOW, else ERRNO(ENOSYS);
       steps 7-11 exist only for syscalls on the list, the others reach this step)

64-bit arguments
----------------
``seccomp_data.args`` are u64 and classic BPF loads 32 bits at a time.  Every argument
checked here (clone flags, personality, ioctl request, socket family, the huge page flags)
is truncated to 32 bits by the kernel before use: ``personality(unsigned int)``,
``ioctl(.., unsigned int cmd, ..)``, ``socket(int family, ..)``, ``memfd_create(..,
unsigned int flags)``, ``shmget(.., int shmflg)``, and ``clone`` uses
``lower_32_bits(clone_flags)``; ``mmap`` takes an unsigned long but MAP_HUGETLB is bit 18,
in the low word, and no bit of the high word changes what it means.  So the
filter deliberately looks at the low word only and ignores the high word, which makes it
decide on exactly the value the kernel will act on.  Also requiring ``high == 0`` would be
wrong in the deny direction: ``ioctl(fd, TIOCSTI | 1 << 32)`` would pass such a check and
still be TIOCSTI to the kernel (that was CVE-2019-10063 in Flatpak).  In the allow direction
(family, personality) ignoring the high word only admits values the kernel reads as allowed
ones, e.g. a sign-extended ``personality(-1)`` query.  Only little-endian arches are
supported, so the low word is at ``offsetof(args[i])`` and the high word 4 bytes later.

Program shape
-------------
Instructions are built as a list of :class:`_Insn` with symbolic jump targets and
:class:`_Label` markers, resolved to relative offsets by :func:`_assemble`.  Classic BPF
jumps are forward only and conditional ones reach at most 255 instructions, so the deny
list is emitted in chunks, each followed by its own ``ret ERRNO(EPERM)``.  Results that
depend only on the syscall number let the kernel's seccomp action cache (5.11+) skip the
filter entirely for allowed syscalls; only the handful of argument-checked syscalls run it
(``mmap`` is one of them, for MAP_HUGETLB: about a hundred BPF instructions per call).  The
allow-list is matched the same way, in chunks, after the argument-check blocks: nothing is
added to the path of an argument-checked syscall, and the action cache answers the listed ones
(without the cache, before 5.11, each of those walks the list too).

Syscall tables are those of Linux 6.19 (``arch/x86/entry/syscalls/syscall_64.tbl`` and,
for arm64, ``scripts/syscall.tbl`` with the ``common``/``64``/``renameat``/``rlimit``/
``memfd_secret`` ABIs), up to ``listns`` (470).  Names that exist on one architecture only
(``iopl``, ``_sysctl``, ... on arm64) are skipped where absent; unknown names are an error.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import socket
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "AUDIT_ARCH_AARCH64",
    "AUDIT_ARCH_X86_64",
    "DEFAULT_DENIED",
    "DEFAULT_UNAVAILABLE",
    "PROFILES",
    "SeccompProfile",
    "build_lock_supervision_program",
    "build_program",
    "install",
    "lock_supervision_supported",
    "profile",
    "supported",
]

# --- kernel ABI constants ------------------------------------------------------------------

# <linux/filter.h>: classic BPF opcodes (class | size | mode, class | op | src).
_BPF_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_BPF_JMP_JA = 0x05 | 0x00  # BPF_JMP | BPF_JA
_BPF_JMP_JEQ_K = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_JMP_JGT_K = 0x05 | 0x20 | 0x00  # BPF_JMP | BPF_JGT | BPF_K
_BPF_JMP_JSET_K = 0x05 | 0x40 | 0x00  # BPF_JMP | BPF_JSET | BPF_K
_BPF_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K
BPF_MAXINSNS = 4096
_SOCK_FILTER = struct.Struct("=HBBI")  # struct sock_filter { u16 code; u8 jt, jf; u32 k; }
_MAX_JUMP = 255  # jt/jf are u8

# <linux/seccomp.h>
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_GET_NOTIF_SIZES = 3
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 1 << 4
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_DATA = 0x0000FFFF

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARGS = 16

# <linux/audit.h>: EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
AUDIT_ARCH_X86_64 = 62 | 0x80000000 | 0x40000000  # 0xC000003E
AUDIT_ARCH_AARCH64 = 183 | 0x80000000 | 0x40000000  # 0xC00000B7
_X32_SYSCALL_BIT = 0x40000000
_NR_NONE = 0xFFFFFFFF  # (u32)-1

# <linux/prctl.h>
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39

# <linux/sched.h>
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_CLONE_NAMESPACE_FLAGS = (
    CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
    | CLONE_NEWTIME
)

# <asm-generic/fcntl.h> (same values on x86_64 and arm64): the commands that take a record lock.
F_SETLK = 6
F_SETLKW = 7
F_OFD_SETLK = 37
F_OFD_SETLKW = 38

# <asm-generic/ioctls.h> (same values on x86_64 and arm64)
TIOCSTI = 0x5412
TIOCLINUX = 0x541C

# <linux/personality.h>: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, query.
_ALLOWED_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# Huge page pool flags (same values on x86_64 and arm64): <asm-generic/mman-common.h>
# MAP_HUGETLB, <linux/memfd.h> MFD_HUGETLB, <linux/shm.h> SHM_HUGETLB.
MAP_HUGETLB = 0x40000
MFD_HUGETLB = 0x0004
SHM_HUGETLB = 0o4000

# --- the policy --------------------------------------------------------------------------

DEFAULT_DENIED: tuple[str, ...] = (
    # Inspecting or writing other processes' memory / file descriptors.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    # Mounts and namespaces: the classic container-escape toolkit.
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "open_tree_attr",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "statmount",
    "listmount",
    "unshare",
    "setns",
    "listns",
    # Whole-system administration.
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "init_module",
    "finit_module",
    "delete_module",
    "acct",
    "swapon",
    "swapoff",
    "syslog",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
    "modify_ldt",  # x86 only; a history of kernel bugs (refused by Docker's profile too)
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "vhangup",
    # Large kernel attack surface with no use in a notebook.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "fanotify_init",
    "name_to_handle_at",
    "open_by_handle_at",
    "mbind",
    "set_mempolicy",
    "migrate_pages",
    "move_pages",
    "memfd_secret",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
)

DEFAULT_UNAVAILABLE: tuple[str, ...] = (
    # AIO: every context takes from fs.aio-max-nr, one counter for the whole host, and no
    # cgroup limits it (io_setup(32768) took half of it here).  Libraries fall back to threads.
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    # inotify: the read-only binds share inodes with every other session and the host, so a
    # watch on a library directory shows what other sessions import.  Watchers fall back to
    # polling.  (fanotify_init is in DEFAULT_DENIED.)
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
)


@dataclass(frozen=True)
class SeccompProfile:
    """What the filter refuses.  The fixed argument checks (steps 1-3 and 6-11 in the module
    docstring) are always present; the fields tune steps 4, 5, 10 and 12."""

    denied_syscalls: tuple[str, ...] = DEFAULT_DENIED
    """Syscall names that fail with EPERM.  Names missing from the target arch are skipped."""
    unavailable_syscalls: tuple[str, ...] = DEFAULT_UNAVAILABLE
    """Syscall names that fail with ENOSYS, as on a kernel without them (same skipping)."""
    allowed_socket_families: tuple[int, ...] = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)
    """``socket``/``socketpair`` families (arg0) that are allowed; others get EAFNOSUPPORT."""
    allowed_syscalls: tuple[str, ...] | None = None
    """None: a deny-list (step 12 allows everything not refused above).  A tuple: an
    allow-list (step 12 allows only these names; every other syscall fails with ENOSYS).
    Names missing from the target arch are skipped; a name also denied or unavailable keeps
    that verdict."""


PROFILES: tuple[str, ...] = ("deny", "allow")
"""The named profiles a :class:`~codeinterp.sandbox.policy.SandboxPolicy` can choose."""


def profile(name: str) -> SeccompProfile:
    """The named profile: ``"deny"`` (the deny-list) or ``"allow"`` (the deny-list's rules
    plus the shipped allow-list, ``seccomp_allowlist.ALLOWED``)."""
    if name == "deny":
        return SeccompProfile()
    if name == "allow":
        from .seccomp_allowlist import ALLOWED

        return SeccompProfile(allowed_syscalls=ALLOWED)
    raise ValueError(f"unknown seccomp profile {name!r}; known: {', '.join(PROFILES)}")


# --- syscall tables (Linux 6.19), "nr:name" tokens ----------------------------------------------

_X86_64_TABLE = """
0:read 1:write 2:open 3:close 4:stat 5:fstat 6:lstat 7:poll 8:lseek 9:mmap 10:mprotect
11:munmap 12:brk 13:rt_sigaction 14:rt_sigprocmask 15:rt_sigreturn 16:ioctl 17:pread64
18:pwrite64 19:readv 20:writev 21:access 22:pipe 23:select 24:sched_yield 25:mremap 26:msync
27:mincore 28:madvise 29:shmget 30:shmat 31:shmctl 32:dup 33:dup2 34:pause 35:nanosleep
36:getitimer 37:alarm 38:setitimer 39:getpid 40:sendfile 41:socket 42:connect 43:accept
44:sendto 45:recvfrom 46:sendmsg 47:recvmsg 48:shutdown 49:bind 50:listen 51:getsockname
52:getpeername 53:socketpair 54:setsockopt 55:getsockopt 56:clone 57:fork 58:vfork 59:execve
60:exit 61:wait4 62:kill 63:uname 64:semget 65:semop 66:semctl 67:shmdt 68:msgget 69:msgsnd
70:msgrcv 71:msgctl 72:fcntl 73:flock 74:fsync 75:fdatasync 76:truncate 77:ftruncate
78:getdents 79:getcwd 80:chdir 81:fchdir 82:rename 83:mkdir 84:rmdir 85:creat 86:link
87:unlink 88:symlink 89:readlink 90:chmod 91:fchmod 92:chown 93:fchown 94:lchown 95:umask
96:gettimeofday 97:getrlimit 98:getrusage 99:sysinfo 100:times 101:ptrace 102:getuid
103:syslog 104:getgid 105:setuid 106:setgid 107:geteuid 108:getegid 109:setpgid 110:getppid
111:getpgrp 112:setsid 113:setreuid 114:setregid 115:getgroups 116:setgroups 117:setresuid
118:getresuid 119:setresgid 120:getresgid 121:getpgid 122:setfsuid 123:setfsgid 124:getsid
125:capget 126:capset 127:rt_sigpending 128:rt_sigtimedwait 129:rt_sigqueueinfo
130:rt_sigsuspend 131:sigaltstack 132:utime 133:mknod 134:uselib 135:personality 136:ustat
137:statfs 138:fstatfs 139:sysfs 140:getpriority 141:setpriority 142:sched_setparam
143:sched_getparam 144:sched_setscheduler 145:sched_getscheduler 146:sched_get_priority_max
147:sched_get_priority_min 148:sched_rr_get_interval 149:mlock 150:munlock 151:mlockall
152:munlockall 153:vhangup 154:modify_ldt 155:pivot_root 156:_sysctl 157:prctl 158:arch_prctl
159:adjtimex 160:setrlimit 161:chroot 162:sync 163:acct 164:settimeofday 165:mount 166:umount2
167:swapon 168:swapoff 169:reboot 170:sethostname 171:setdomainname 172:iopl 173:ioperm
174:create_module 175:init_module 176:delete_module 177:get_kernel_syms 178:query_module
179:quotactl 180:nfsservctl 181:getpmsg 182:putpmsg 183:afs_syscall 184:tuxcall 185:security
186:gettid 187:readahead 188:setxattr 189:lsetxattr 190:fsetxattr 191:getxattr 192:lgetxattr
193:fgetxattr 194:listxattr 195:llistxattr 196:flistxattr 197:removexattr 198:lremovexattr
199:fremovexattr 200:tkill 201:time 202:futex 203:sched_setaffinity 204:sched_getaffinity
205:set_thread_area 206:io_setup 207:io_destroy 208:io_getevents 209:io_submit 210:io_cancel
211:get_thread_area 212:lookup_dcookie 213:epoll_create 214:epoll_ctl_old 215:epoll_wait_old
216:remap_file_pages 217:getdents64 218:set_tid_address 219:restart_syscall 220:semtimedop
221:fadvise64 222:timer_create 223:timer_settime 224:timer_gettime 225:timer_getoverrun
226:timer_delete 227:clock_settime 228:clock_gettime 229:clock_getres 230:clock_nanosleep
231:exit_group 232:epoll_wait 233:epoll_ctl 234:tgkill 235:utimes 236:vserver 237:mbind
238:set_mempolicy 239:get_mempolicy 240:mq_open 241:mq_unlink 242:mq_timedsend
243:mq_timedreceive 244:mq_notify 245:mq_getsetattr 246:kexec_load 247:waitid 248:add_key
249:request_key 250:keyctl 251:ioprio_set 252:ioprio_get 253:inotify_init
254:inotify_add_watch 255:inotify_rm_watch 256:migrate_pages 257:openat 258:mkdirat
259:mknodat 260:fchownat 261:futimesat 262:newfstatat 263:unlinkat 264:renameat 265:linkat
266:symlinkat 267:readlinkat 268:fchmodat 269:faccessat 270:pselect6 271:ppoll 272:unshare
273:set_robust_list 274:get_robust_list 275:splice 276:tee 277:sync_file_range 278:vmsplice
279:move_pages 280:utimensat 281:epoll_pwait 282:signalfd 283:timerfd_create 284:eventfd
285:fallocate 286:timerfd_settime 287:timerfd_gettime 288:accept4 289:signalfd4 290:eventfd2
291:epoll_create1 292:dup3 293:pipe2 294:inotify_init1 295:preadv 296:pwritev
297:rt_tgsigqueueinfo 298:perf_event_open 299:recvmmsg 300:fanotify_init 301:fanotify_mark
302:prlimit64 303:name_to_handle_at 304:open_by_handle_at 305:clock_adjtime 306:syncfs
307:sendmmsg 308:setns 309:getcpu 310:process_vm_readv 311:process_vm_writev 312:kcmp
313:finit_module 314:sched_setattr 315:sched_getattr 316:renameat2 317:seccomp 318:getrandom
319:memfd_create 320:kexec_file_load 321:bpf 322:execveat 323:userfaultfd 324:membarrier
325:mlock2 326:copy_file_range 327:preadv2 328:pwritev2 329:pkey_mprotect 330:pkey_alloc
331:pkey_free 332:statx 333:io_pgetevents 334:rseq 335:uretprobe 336:uprobe
424:pidfd_send_signal 425:io_uring_setup 426:io_uring_enter 427:io_uring_register
428:open_tree 429:move_mount 430:fsopen 431:fsconfig 432:fsmount 433:fspick 434:pidfd_open
435:clone3 436:close_range 437:openat2 438:pidfd_getfd 439:faccessat2 440:process_madvise
441:epoll_pwait2 442:mount_setattr 443:quotactl_fd 444:landlock_create_ruleset
445:landlock_add_rule 446:landlock_restrict_self 447:memfd_secret 448:process_mrelease
449:futex_waitv 450:set_mempolicy_home_node 451:cachestat 452:fchmodat2 453:map_shadow_stack
454:futex_wake 455:futex_wait 456:futex_requeue 457:statmount 458:listmount
459:lsm_get_self_attr 460:lsm_set_self_attr 461:lsm_list_modules 462:mseal 463:setxattrat
464:getxattrat 465:listxattrat 466:removexattrat 467:open_tree_attr 468:file_getattr
469:file_setattr 470:listns
"""
_AARCH64_TABLE = """
0:io_setup 1:io_destroy 2:io_submit 3:io_cancel 4:io_getevents 5:setxattr 6:lsetxattr
7:fsetxattr 8:getxattr 9:lgetxattr 10:fgetxattr 11:listxattr 12:llistxattr 13:flistxattr
14:removexattr 15:lremovexattr 16:fremovexattr 17:getcwd 18:lookup_dcookie 19:eventfd2
20:epoll_create1 21:epoll_ctl 22:epoll_pwait 23:dup 24:dup3 25:fcntl 26:inotify_init1
27:inotify_add_watch 28:inotify_rm_watch 29:ioctl 30:ioprio_set 31:ioprio_get 32:flock
33:mknodat 34:mkdirat 35:unlinkat 36:symlinkat 37:linkat 38:renameat 39:umount2 40:mount
41:pivot_root 42:nfsservctl 43:statfs 44:fstatfs 45:truncate 46:ftruncate 47:fallocate
48:faccessat 49:chdir 50:fchdir 51:chroot 52:fchmod 53:fchmodat 54:fchownat 55:fchown
56:openat 57:close 58:vhangup 59:pipe2 60:quotactl 61:getdents64 62:lseek 63:read 64:write
65:readv 66:writev 67:pread64 68:pwrite64 69:preadv 70:pwritev 71:sendfile 72:pselect6
73:ppoll 74:signalfd4 75:vmsplice 76:splice 77:tee 78:readlinkat 79:newfstatat 80:fstat
81:sync 82:fsync 83:fdatasync 84:sync_file_range 85:timerfd_create 86:timerfd_settime
87:timerfd_gettime 88:utimensat 89:acct 90:capget 91:capset 92:personality 93:exit
94:exit_group 95:waitid 96:set_tid_address 97:unshare 98:futex 99:set_robust_list
100:get_robust_list 101:nanosleep 102:getitimer 103:setitimer 104:kexec_load 105:init_module
106:delete_module 107:timer_create 108:timer_gettime 109:timer_getoverrun 110:timer_settime
111:timer_delete 112:clock_settime 113:clock_gettime 114:clock_getres 115:clock_nanosleep
116:syslog 117:ptrace 118:sched_setparam 119:sched_setscheduler 120:sched_getscheduler
121:sched_getparam 122:sched_setaffinity 123:sched_getaffinity 124:sched_yield
125:sched_get_priority_max 126:sched_get_priority_min 127:sched_rr_get_interval
128:restart_syscall 129:kill 130:tkill 131:tgkill 132:sigaltstack 133:rt_sigsuspend
134:rt_sigaction 135:rt_sigprocmask 136:rt_sigpending 137:rt_sigtimedwait 138:rt_sigqueueinfo
139:rt_sigreturn 140:setpriority 141:getpriority 142:reboot 143:setregid 144:setgid
145:setreuid 146:setuid 147:setresuid 148:getresuid 149:setresgid 150:getresgid 151:setfsuid
152:setfsgid 153:times 154:setpgid 155:getpgid 156:getsid 157:setsid 158:getgroups
159:setgroups 160:uname 161:sethostname 162:setdomainname 163:getrlimit 164:setrlimit
165:getrusage 166:umask 167:prctl 168:getcpu 169:gettimeofday 170:settimeofday 171:adjtimex
172:getpid 173:getppid 174:getuid 175:geteuid 176:getgid 177:getegid 178:gettid 179:sysinfo
180:mq_open 181:mq_unlink 182:mq_timedsend 183:mq_timedreceive 184:mq_notify 185:mq_getsetattr
186:msgget 187:msgctl 188:msgrcv 189:msgsnd 190:semget 191:semctl 192:semtimedop 193:semop
194:shmget 195:shmctl 196:shmat 197:shmdt 198:socket 199:socketpair 200:bind 201:listen
202:accept 203:connect 204:getsockname 205:getpeername 206:sendto 207:recvfrom 208:setsockopt
209:getsockopt 210:shutdown 211:sendmsg 212:recvmsg 213:readahead 214:brk 215:munmap
216:mremap 217:add_key 218:request_key 219:keyctl 220:clone 221:execve 222:mmap 223:fadvise64
224:swapon 225:swapoff 226:mprotect 227:msync 228:mlock 229:munlock 230:mlockall
231:munlockall 232:mincore 233:madvise 234:remap_file_pages 235:mbind 236:get_mempolicy
237:set_mempolicy 238:migrate_pages 239:move_pages 240:rt_tgsigqueueinfo 241:perf_event_open
242:accept4 243:recvmmsg 260:wait4 261:prlimit64 262:fanotify_init 263:fanotify_mark
264:name_to_handle_at 265:open_by_handle_at 266:clock_adjtime 267:syncfs 268:setns
269:sendmmsg 270:process_vm_readv 271:process_vm_writev 272:kcmp 273:finit_module
274:sched_setattr 275:sched_getattr 276:renameat2 277:seccomp 278:getrandom 279:memfd_create
280:bpf 281:execveat 282:userfaultfd 283:membarrier 284:mlock2 285:copy_file_range 286:preadv2
287:pwritev2 288:pkey_mprotect 289:pkey_alloc 290:pkey_free 291:statx 292:io_pgetevents
293:rseq 294:kexec_file_load 424:pidfd_send_signal 425:io_uring_setup 426:io_uring_enter
427:io_uring_register 428:open_tree 429:move_mount 430:fsopen 431:fsconfig 432:fsmount
433:fspick 434:pidfd_open 435:clone3 436:close_range 437:openat2 438:pidfd_getfd
439:faccessat2 440:process_madvise 441:epoll_pwait2 442:mount_setattr 443:quotactl_fd
444:landlock_create_ruleset 445:landlock_add_rule 446:landlock_restrict_self 447:memfd_secret
448:process_mrelease 449:futex_waitv 450:set_mempolicy_home_node 451:cachestat 452:fchmodat2
453:map_shadow_stack 454:futex_wake 455:futex_wait 456:futex_requeue 457:statmount
458:listmount 459:lsm_get_self_attr 460:lsm_set_self_attr 461:lsm_list_modules 462:mseal
463:setxattrat 464:getxattrat 465:listxattrat 466:removexattrat 467:open_tree_attr
468:file_getattr 469:file_setattr 470:listns
"""


@dataclass(frozen=True)
class _Arch:
    name: str
    audit_arch: int
    syscalls: Mapping[str, int]
    x32_bit: int  # 0 when the arch has no alternative ABI multiplexed on the syscall number

    @property
    def max_nr(self) -> int:
        return max(self.syscalls.values())


def _parse_table(text: str) -> dict[str, int]:
    table: dict[str, int] = {}
    for token in text.split():
        nr, name = token.split(":")
        table[name] = int(nr)
    return table


_ARCHES: dict[str, _Arch] = {
    "x86_64": _Arch("x86_64", AUDIT_ARCH_X86_64, _parse_table(_X86_64_TABLE), _X32_SYSCALL_BIT),
    "aarch64": _Arch("aarch64", AUDIT_ARCH_AARCH64, _parse_table(_AARCH64_TABLE), 0),
}
_MACHINE_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def _host_arch() -> _Arch | None:
    name = _MACHINE_ALIASES.get(platform.machine().lower())
    return None if name is None else _ARCHES[name]


def _target_arch(arch: str | None) -> _Arch:
    if arch is None:
        host = _host_arch()
        if host is None:
            raise OSError(
                errno.ENOTSUP, f"seccomp: unsupported architecture {platform.machine()!r}"
            )
        return host
    try:
        return _ARCHES[_MACHINE_ALIASES.get(arch.lower(), arch)]
    except KeyError:
        raise ValueError(f"unsupported architecture {arch!r}; known: {sorted(_ARCHES)}") from None


# --- a tiny assembler with symbolic labels ------------------------------------------------


@dataclass(frozen=True)
class _Label:
    name: str


@dataclass(frozen=True)
class _Insn:
    code: int
    k: int = 0
    jt: str | None = None  # label to jump to when true; None = next instruction
    jf: str | None = None  # label to jump to when false; None = next instruction
    target: str | None = None  # for BPF_JA: label to jump to (offset goes in k)


_Item = _Insn | _Label


def _ld(offset: int) -> _Insn:
    """A = *(u32 *)(seccomp_data + offset)"""
    return _Insn(_BPF_LD_W_ABS, offset)


def _ld_arg_low(index: int) -> _Insn:
    """A = low 32 bits of args[index] (little-endian only, see module docstring)."""
    return _ld(_OFF_ARGS + 8 * index)


def _jeq(value: int, jt: str | None = None, jf: str | None = None) -> _Insn:
    return _Insn(_BPF_JMP_JEQ_K, value, jt, jf)


def _jgt(value: int, jt: str | None = None, jf: str | None = None) -> _Insn:
    return _Insn(_BPF_JMP_JGT_K, value, jt, jf)


def _jset(mask: int, jt: str | None = None, jf: str | None = None) -> _Insn:
    return _Insn(_BPF_JMP_JSET_K, mask, jt, jf)


def _ja(target: str) -> _Insn:
    return _Insn(_BPF_JMP_JA, target=target)


def _ret(action: int) -> _Insn:
    return _Insn(_BPF_RET_K, action)


def _ret_errno(err: int) -> int:
    return SECCOMP_RET_ERRNO | (err & _SECCOMP_RET_DATA)


def _assemble(items: Sequence[_Item]) -> bytes:
    """Resolve labels to relative forward offsets and pack ``struct sock_filter``s."""
    positions: dict[str, int] = {}
    count = 0
    for item in items:
        if isinstance(item, _Label):
            if item.name in positions:
                raise ValueError(f"duplicate BPF label {item.name!r}")
            positions[item.name] = count
        else:
            count += 1

    def offset(pc: int, label: str | None, limit: int) -> int:
        if label is None:
            return 0
        try:
            delta = positions[label] - (pc + 1)
        except KeyError:
            raise ValueError(f"undefined BPF label {label!r}") from None
        if not 0 <= delta <= limit:
            raise ValueError(f"BPF jump to {label!r} out of range ({delta}) at pc {pc}")
        return delta

    out = bytearray()
    pc = 0
    for item in items:
        if isinstance(item, _Label):
            continue
        k = item.k
        if item.target is not None:
            k = offset(pc, item.target, 0xFFFFFFFF)
        jt = offset(pc, item.jt, _MAX_JUMP)
        jf = offset(pc, item.jf, _MAX_JUMP)
        out += _SOCK_FILTER.pack(item.code, jt, jf, k & 0xFFFFFFFF)
        pc += 1
    return bytes(out)


# --- rule blocks ----------------------------------------------------------------------------

_CHUNK = 200  # deny-list jeqs per chunk, so every jump stays within 255


def _match_any(nrs: Iterable[int], action: int, tag: str) -> list[_Item]:
    """``if nr in nrs: return action``, for A = nr.  Falls through otherwise."""
    ordered = sorted(set(nrs))
    items: list[_Item] = []
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        hit, miss = f"{tag}_hit_{start}", f"{tag}_miss_{start}"
        items += [_jeq(nr, jt=hit) for nr in chunk[:-1]]
        items += [_jeq(chunk[-1], jf=miss), _Label(hit), _ret(action), _Label(miss)]
    return items


def _header(arch: _Arch) -> list[_Item]:
    """Steps 1-3: architecture, alternative ABIs, syscall numbers newer than our table."""
    items: list[_Item] = [
        _ld(_OFF_ARCH),
        _jeq(arch.audit_arch, jf="kill"),
        _ld(_OFF_NR),
        _jeq(_NR_NONE, jt="enosys"),
    ]
    if arch.x32_bit:
        items.append(_jset(arch.x32_bit, jt="kill"))
    items += [
        _jgt(arch.max_nr, jt="enosys", jf="known_nr"),
        _Label("kill"),
        _ret(SECCOMP_RET_KILL_PROCESS),
        _Label("enosys"),
        _ret(_ret_errno(errno.ENOSYS)),
        _Label("known_nr"),
    ]
    return items


def _allow_only(values: Sequence[int], deny: str) -> list[_Item]:
    """``return ALLOW if A in values else goto deny``."""
    if not values:
        return [_ja(deny)]
    items: list[_Item] = [_jeq(v, jt="allow") for v in values[:-1]]
    items.append(_jeq(values[-1], jt="allow", jf=deny))
    return items


def _argument_checks(
    arch: _Arch, skip: set[int], profile: SeccompProfile, allowed: set[int] | None
) -> list[_Item]:
    """Steps 6-12: clone3, then the syscalls whose verdict depends on an argument.

    Entered with A = nr.  A dispatch table jumps to one block per argument check; every
    block ends in a jump to one of the shared returns placed after all blocks (classic BPF
    only jumps forward).  Syscalls in ``skip`` (already denied outright) are left out, and
    with an allow-list (``allowed`` not None) so are those not on it: they reach step 12,
    which then allows only the numbers in ``allowed`` and answers ENOSYS to the rest.
    """
    nr = arch.syscalls
    families = tuple(dict.fromkeys(profile.allowed_socket_families))
    bodies: dict[str, list[_Item]] = {
        "clone_flags": [_ld_arg_low(0), _jset(_CLONE_NAMESPACE_FLAGS, jt="eperm", jf="allow")],
        "personality": [_ld_arg_low(0), *_allow_only(_ALLOWED_PERSONALITIES, deny="eperm")],
        "ioctl_request": [
            _ld_arg_low(1),
            _jeq(TIOCSTI, jt="eperm"),
            _jeq(TIOCLINUX, jt="eperm", jf="allow"),
        ],
        "socket_family": [_ld_arg_low(0), *_allow_only(families, deny="eafnosupport")],
        "mmap_flags": [_ld_arg_low(3), _jset(MAP_HUGETLB, jt="eperm", jf="allow")],
        "memfd_flags": [_ld_arg_low(1), _jset(MFD_HUGETLB, jt="eperm", jf="allow")],
        "shmget_flags": [_ld_arg_low(2), _jset(SHM_HUGETLB, jt="eperm", jf="allow")],
    }
    dispatch = [
        ("clone", "clone_flags"),
        ("personality", "personality"),
        ("ioctl", "ioctl_request"),
        ("socket", "socket_family"),
        ("socketpair", "socket_family"),
        ("mmap", "mmap_flags"),
        ("memfd_create", "memfd_flags"),
        ("shmget", "shmget_flags"),
    ]
    active = [(nr[name], label) for name, label in dispatch if nr.get(name, -1) not in skip | {-1}]
    if allowed is not None:
        active = [(number, label) for number, label in active if number in allowed]

    items: list[_Item] = []
    if nr.get("clone3", -1) not in skip | {-1}:
        items += _match_any([nr["clone3"]], _ret_errno(errno.ENOSYS), "clone3")
    items += [_jeq(number, jt=label) for number, label in active]
    if allowed is None:
        items.append(_ret(SECCOMP_RET_ALLOW))  # step 12: everything else
    else:
        # Step 12 of the allow-list comes after the blocks below: placed here it would push
        # them out of reach of the dispatch's conditional jumps (255 at most).
        items.append(_ja("allow_list"))
    for label in dict.fromkeys(label for _, label in active):
        items += [_Label(label), *bodies[label]]
    items += [
        _Label("allow"),
        _ret(SECCOMP_RET_ALLOW),
        _Label("eperm"),
        _ret(_ret_errno(errno.EPERM)),
        _Label("eafnosupport"),
        _ret(_ret_errno(errno.EAFNOSUPPORT)),
    ]
    if allowed is not None:
        plain = allowed - skip - {number for number, _ in active}
        items += [_Label("allow_list")]
        if plain:
            items += _match_any(plain, SECCOMP_RET_ALLOW, "allowed")
        items.append(_ret(_ret_errno(errno.ENOSYS)))
    return items


def _denied_numbers(arch: _Arch, names: Iterable[str]) -> set[int]:
    known = {name for table in _ARCHES.values() for name in table.syscalls}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown syscall name(s) in seccomp profile: {', '.join(unknown)}")
    return {arch.syscalls[name] for name in names if name in arch.syscalls}


def build_program(profile: SeccompProfile, *, arch: str | None = None) -> bytes:
    """Assemble the filter for ``profile`` as a raw ``struct sock_filter`` array.

    ``arch`` is ``"x86_64"`` or ``"aarch64"`` (default: this machine).  Pure computation:
    call it once in the parent and hand the bytes to :func:`install` in each child.
    """
    target = _target_arch(arch)
    denied = _denied_numbers(target, profile.denied_syscalls)
    unavailable = _denied_numbers(target, profile.unavailable_syscalls) - denied
    for family in profile.allowed_socket_families:
        if not 0 <= family <= 0xFFFFFFFF:
            raise ValueError(f"socket family out of range: {family}")
    items: list[_Item] = _header(target)
    if denied:
        items += _match_any(denied, _ret_errno(errno.EPERM), "denied")
    if unavailable:
        items += _match_any(unavailable, _ret_errno(errno.ENOSYS), "unavailable")
    allowed = None
    if profile.allowed_syscalls is not None:
        allowed = _denied_numbers(target, profile.allowed_syscalls)
    items += _argument_checks(target, denied | unavailable, profile, allowed)
    program = _assemble(items)
    if len(program) // _SOCK_FILTER.size > BPF_MAXINSNS:
        raise ValueError(f"seccomp program too long: {len(program) // _SOCK_FILTER.size} insns")
    return program


def build_lock_supervision_program(*, arch: str | None = None) -> bytes:
    """A second filter for session processes, loaded before their profile's with
    ``install(.., listener=True)``; the kernel applies the stricter answer of the two::

        fcntl(fd, F_SETLK | F_SETLKW, ..)                  -> USER_NOTIF
        fcntl(fd, F_OFD_SETLK | F_OFD_SETLKW, ..)          -> ERRNO(EINVAL)
        everything else (other arches too: the profile
        kills those)                                       -> ALLOW

    Record locks are kernel memory that no cgroup pays for; the listener's holder counts them
    against the session's budget (``file_locks``) from each process's open files. An OFD lock
    lives as long as its open file description, which can outlast every descriptor of it (sent
    over a unix socket and never received), where no count would find it; EINVAL is what
    kernels before 3.15 said. A filter of its own rather than a profile rule: the listener fd
    must be sent out of the process after loading, and the allow-list profile has no
    ``sendmsg``.
    """
    target = _target_arch(arch)
    items: list[_Item] = [
        _ld(_OFF_ARCH),
        _jeq(target.audit_arch, jf="allow"),
        _ld(_OFF_NR),
        _jeq(target.syscalls["fcntl"], jf="allow"),
        _ld_arg_low(1),
        _jeq(F_SETLK, jt="notify"),
        _jeq(F_SETLKW, jt="notify"),
        _jeq(F_OFD_SETLK, jt="einval"),
        _jeq(F_OFD_SETLKW, jt="einval", jf="allow"),
        _Label("allow"),
        _ret(SECCOMP_RET_ALLOW),
        _Label("notify"),
        _ret(SECCOMP_RET_USER_NOTIF),
        _Label("einval"),
        _ret(_ret_errno(errno.EINVAL)),
    ]
    return _assemble(items)


# --- loading ---------------------------------------------------------------------------------


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.restype = ctypes.c_int
    # prctl(2) is variadic in glibc but the kernel reads all four extra arguments (and
    # PR_GET_NO_NEW_PRIVS insists they are zero), so always pass all of them.
    libc.prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    return libc


def _prctl(option: int, arg2: int = 0) -> int:
    ctypes.set_errno(0)
    rc: int = _libc().prctl(option, arg2, 0, 0, 0)
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")
    return rc


def _seccomp(arch: _Arch, operation: int, flags: int, arg: ctypes.c_void_p | int) -> int:
    """Raw ``seccomp(2)``; returns the result or raises OSError."""
    ctypes.set_errno(0)
    rc: int = _libc().syscall(
        ctypes.c_long(arch.syscalls["seccomp"]),
        ctypes.c_ulong(operation),
        ctypes.c_ulong(flags),
        arg if isinstance(arg, ctypes.c_void_p) else ctypes.c_void_p(arg),
    )
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp({operation}, {flags:#x}): {os.strerror(err)}")
    return rc


def _check_program(program: bytes, arch: _Arch) -> None:
    size = _SOCK_FILTER.size
    if not program or len(program) % size or len(program) // size > BPF_MAXINSNS:
        raise ValueError(f"not a seccomp program: {len(program)} bytes")
    # Refuse one of ours built for another arch: it would kill us on the next syscall.
    if len(program) >= 2 * size:
        load, check = _SOCK_FILTER.unpack_from(program), _SOCK_FILTER.unpack_from(program, size)
        is_arch_check = load == (_BPF_LD_W_ABS, 0, 0, _OFF_ARCH) and check[0] == _BPF_JMP_JEQ_K
        if is_arch_check and check[3] != arch.audit_arch:
            raise ValueError(f"seccomp program is for audit arch {check[3]:#x}, not {arch.name}")


def install(program: bytes, *, set_no_new_privs: bool = False, listener: bool = False) -> int:
    """Load ``program`` (from :func:`build_program`) into the calling process, all threads.

    The caller must already have set ``PR_SET_NO_NEW_PRIVS`` (it is refused otherwise, even
    for root, so that the sandbox never depends on CAP_SYS_ADMIN for this); pass
    ``set_no_new_privs=True`` to have it set here.  Irreversible.  Raises OSError with the
    kernel's errno on failure (EACCES without no_new_privs, EINVAL for a bad program, ...).

    With ``listener=True`` (the program of :func:`build_lock_supervision_program`) returns
    the filter's notification fd, which must leave this process before untrusted code runs:
    whoever holds it answers the notified syscalls.  Otherwise returns -1.
    """
    arch = _host_arch()
    if sys.platform != "linux" or arch is None:
        raise OSError(errno.ENOTSUP, f"seccomp: unsupported platform {platform.machine()!r}")
    _check_program(program, arch)
    if set_no_new_privs:
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    elif _prctl(_PR_GET_NO_NEW_PRIVS) != 1:
        raise OSError(errno.EACCES, "seccomp: no_new_privs is not set in this process")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // _SOCK_FILTER.size, ctypes.cast(buffer, ctypes.c_void_p))
    address = ctypes.c_void_p(ctypes.addressof(fprog))
    if listener:
        # TSYNC alone returns a thread id where NEW_LISTENER returns the fd; TSYNC_ESRCH makes
        # an unsynchronisable thread an ESRCH error instead.
        flags = (
            SECCOMP_FILTER_FLAG_TSYNC
            | SECCOMP_FILTER_FLAG_TSYNC_ESRCH
            | SECCOMP_FILTER_FLAG_NEW_LISTENER
        )
        return _seccomp(arch, SECCOMP_SET_MODE_FILTER, flags, address)
    tid = _seccomp(arch, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, address)
    if tid != 0:  # TSYNC: the id of a thread that could not be synchronised; nothing loaded
        raise OSError(errno.EBUSY, f"seccomp: thread {tid} has an incompatible seccomp filter")
    return -1


# struct seccomp_notif_sizes { __u16 seccomp_notif, seccomp_notif_resp, seccomp_data; }
_NOTIF_SIZES = struct.Struct("=HHH")
NOTIF_SIZE = 80  # struct seccomp_notif: id u64, pid u32, flags u32, struct seccomp_data (64)
NOTIF_RESP_SIZE = 24  # struct seccomp_notif_resp: id u64, val s64, error s32, flags u32


def lock_supervision_supported() -> tuple[bool, str]:
    """Whether sessions can get a listener for their record locks (the filter of
    :func:`build_lock_supervision_program`):
    the USER_NOTIF action, the structure sizes this module packs, and Linux 5.7+ (answering
    with SECCOMP_USER_NOTIF_FLAG_CONTINUE came in 5.5, TSYNC_ESRCH in 5.7)."""
    ok, why = supported()
    if not ok:
        return False, why
    arch = _host_arch()
    assert arch is not None
    try:
        major, minor = (int(part) for part in platform.release().split(".")[:2])
    except ValueError:
        return False, f"cannot read the kernel version from {platform.release()!r}"
    if (major, minor) < (5, 7):
        return False, f"kernel {platform.release()} is older than 5.7"
    action = ctypes.c_uint32(SECCOMP_RET_USER_NOTIF)
    sizes = ctypes.create_string_buffer(_NOTIF_SIZES.size)
    try:
        _seccomp(arch, SECCOMP_GET_ACTION_AVAIL, 0, ctypes.c_void_p(ctypes.addressof(action)))
        _seccomp(arch, SECCOMP_GET_NOTIF_SIZES, 0, ctypes.c_void_p(ctypes.addressof(sizes)))
    except OSError as exc:
        return False, f"seccomp user notification unavailable: {exc.strerror}"
    notif, resp, _ = _NOTIF_SIZES.unpack(sizes.raw)
    if (notif, resp) != (NOTIF_SIZE, NOTIF_RESP_SIZE):
        return False, f"unexpected seccomp notification sizes {notif}/{resp}"
    return True, "record locks are counted per session (seccomp user notification)"


def supported() -> tuple[bool, str]:
    """Whether :func:`install` can work here, and a one-line reason (for ``doctor``)."""
    if sys.platform != "linux":
        return False, f"seccomp is Linux-only (platform is {sys.platform})"
    arch = _host_arch()
    if arch is None:
        return False, f"no syscall table for architecture {platform.machine()!r}"
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return False, "32-bit Python on a 64-bit kernel: its syscalls would use a killed ABI"
    if sys.byteorder != "little":
        return False, "big-endian hosts are not supported"
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            mode = next((ln.split()[1] for ln in status if ln.startswith("Seccomp:")), None)
    except OSError:
        mode = "?"
    if mode is None:
        return False, "kernel built without CONFIG_SECCOMP"
    for action in (SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_ERRNO, SECCOMP_RET_ALLOW):
        value = ctypes.c_uint32(action)
        address = ctypes.c_void_p(ctypes.addressof(value))
        try:
            _seccomp(arch, SECCOMP_GET_ACTION_AVAIL, 0, address)
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                why = "no seccomp() syscall or CONFIG_SECCOMP_FILTER (kernel < 3.17?)"
            elif exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                why = f"seccomp action {action:#x} unavailable (kernel < 4.14?)"
            else:
                why = f"seccomp() probe failed: {exc.strerror}"
            return False, why
    nested = ", already filtered" if mode == "2" else ""
    return True, (
        f"seccomp filters supported ({arch.name}, kernel {platform.release()}{nested}); "
        f"syscalls above {arch.max_nr} get ENOSYS"
    )
