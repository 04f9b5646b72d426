namespace Hypervisor.Interop;

/// <summary>
/// The syscalls the daemon makes: its own (the passthrough filesystem, both transports, the control socket) and
/// those of the .NET runtime under it (threads, memory, signals, the socket engine, timers). Names are resolved for
/// the running architecture by libseccomp; a name it does not know is skipped, since nothing here can then call it.
/// The test suite runs every daemon with the default action, kill, which is what shows the list complete.
/// </summary>
internal static class SyscallAllowlist
{
    /// <summary>Syscalls every daemon may make.</summary>
    public static readonly string[] Names =
    [
        // Memory and the runtime's threads.
        "brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "membarrier", "mlock", "munlock",
        "clone", "clone3", "set_robust_list", "get_robust_list", "rseq", "set_tid_address", "arch_prctl",
        "futex", "futex_waitv", "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
        "sched_getscheduler", "sched_get_priority_max", "sched_get_priority_min", "sched_setscheduler", "sched_setparam", "sched_getattr", "sched_setattr", "getpriority", "setpriority", "exit", "exit_group", "restart_syscall",
        "gettid", "getpid", "getppid", "tgkill", "tkill", "prctl", "capget", "getrandom", "uname", "sysinfo",
        "getrlimit", "prlimit64", "getrusage", "times",
        // Signals (the runtime's, and the daemon's SIGTERM handling; the runtime re-raises a signal whose handler it
        // has restored with kill on its own pid, the only process a namespaced daemon can see).
        "kill", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack",
        // Time.
        "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "timerfd_create", "timerfd_settime",
        "timerfd_gettime",
        // Descriptors, polling, pipes and eventfds (the ring's doorbells).
        "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2", "close",
        "close_range", "dup", "dup2", "dup3", "fcntl", "ioctl", "pipe2", "eventfd2", "poll", "ppoll", "select", "pselect6",
        "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "lseek",
        // The control socket (Kestrel) and peer credentials.
        "socket", "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername", "getsockopt", "setsockopt",
        "recvfrom", "recvmsg", "recvmmsg", "sendto", "sendmsg", "sendmmsg", "shutdown", "socketpair",
        // The filesystem: confined lookups, file handles, data, attributes, directories, locks.
        "openat", "openat2", "open", "open_by_handle_at", "name_to_handle_at", "newfstatat", "fstat", "stat", "lstat",
        "statx", "readlinkat", "readlink", "getdents64", "fsync", "fdatasync", "sync_file_range", "syncfs", "ftruncate",
        "truncate", "fallocate", "fadvise64", "mkdirat", "mknodat", "symlinkat", "linkat", "unlinkat", "renameat",
        "renameat2", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchownat", "utimensat", "fgetxattr", "fsetxattr",
        "flistxattr", "fremovexattr", "getxattr", "setxattr", "listxattr", "removexattr", "lgetxattr", "lsetxattr",
        "llistxattr", "lremovexattr", "fstatfs", "statfs", "copy_file_range", "flock", "access", "faccessat",
        "faccessat2", "getcwd", "chdir", "fchdir", "umask", "unshare", "memfd_create",
        // The path forms the runtime's own file calls use (the control socket's removal, File and Directory).
        "unlink", "rmdir", "rename", "mkdir", "link", "symlink", "chmod", "chown", "lchown", "utimes",
        // Acting as the guest's caller.
        "setfsuid", "setfsgid", "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
        "setgroups",
    ];

    /// <summary>Added for a daemon that serves a host /dev/fuse mount (<c>--mount</c>): it unmounts at the end.</summary>
    public static readonly string[] DevFuse = ["mount", "umount2"];

    /// <summary>
    /// Added for the vdev: what it calls itself (starting fuse_launcher, watching daemons, the vhost-user sockets, guest
    /// memory) and, since a filter is inherited across exec, what fuse_launcher calls and what a daemon calls while it
    /// builds its sandbox (the daemon's own, narrower filter then stacks on top).
    /// </summary>
    public static readonly string[] Vdev =
    [
        "execve", "execveat", "vfork", "fork", "wait4", "waitid", "pidfd_open", "pidfd_send_signal", "kill", "setsid",
        "setpgid", "getpgid", "getsid", "fallocate", "memfd_create", "mount", "umount2", "pivot_root", "chroot",
        "setrlimit", "capset", "seccomp", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "sysinfo",
        "getdents", "fstatfs", "close_range", "prctl", "mlock2", "msync", "mincore",
        // The .NET runtime of a fuse_launcher started after the filter (a daemon's replacement) reads its NUMA policy.
        "get_mempolicy",
    ];

    /// <summary>
    /// Added for a vdev that is not root and maps id ranges (<c>--uid-map</c>/<c>--gid-map</c>): a later daemon of such a
    /// share joins the user namespace kept from the first one through nsenter, which enters it (setns) and becomes root
    /// there (setgroups, which <see cref="Names"/> has, setgid, setuid). No other vdev is allowed these.
    /// </summary>
    public static readonly string[] JoinUserNamespace = ["setns", "setgid", "setuid"];
}
