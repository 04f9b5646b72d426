using Hypervisor.Protocol.Share;

namespace Hypervisor.Interop;

/// <summary>A syscall filter that cannot be compiled or loaded; the message is one sentence saying what to change.</summary>
internal sealed class SeccompException(string message) : Exception(message);

/// <summary>
/// A syscall allowlist compiled by libseccomp for this architecture, loaded into the kernel later for every thread
/// (TSYNC). Compiling loads libseccomp, so it is done while the host's /usr is still in view.
/// </summary>
internal sealed class SeccompFilter : IDisposable
{
    private nint _context;

    private SeccompFilter(nint context) => _context = context;

    /// <summary>
    /// Compiles a filter that allows <paramref name="names"/> and applies <paramref name="action"/> (<c>--seccomp</c>;
    /// not <see cref="SeccompAction.None"/>) to everything else; a name libseccomp does not know is skipped, as nothing
    /// here can call it. Throws <see cref="SeccompException"/>.
    /// </summary>
    public static SeccompFilter Compile(SeccompAction action, IEnumerable<string> names)
    {
        uint defaultAction = action switch
        {
            SeccompAction.Trap => Libc.SCMP_ACT_TRAP,
            SeccompAction.Log => Libc.SCMP_ACT_LOG,
            _ => Libc.SCMP_ACT_KILL_PROCESS,
        };
        nint context;
        try
        {
            context = Libc.seccomp_init(defaultAction);
        }
        catch (DllNotFoundException)
        {
            throw Failed($"{Libc.Seccomp} is not installed; install libseccomp2");
        }
        if (context == 0) throw Failed("libseccomp could not create a filter");
        var filter = new SeccompFilter(context);
        foreach (var name in names)
        {
            var number = Libc.seccomp_syscall_resolve_name(name);
            if (number < 0) continue;
            var rc = Libc.seccomp_rule_add(context, Libc.SCMP_ACT_ALLOW, number, 0);
            if (rc != 0)
            {
                filter.Dispose();
                throw Failed($"adding {name} to the filter failed with {Libc.Describe(-rc)}");
            }
        }
        if (Libc.seccomp_attr_set(context, Libc.SCMP_FLTATR_CTL_TSYNC, 1) != 0)
        {
            filter.Dispose();
            throw Failed("this libseccomp cannot apply a filter to every thread (TSYNC); install libseccomp2 2.2 or later");
        }
        return filter;
    }

    /// <summary>Loads the filter for every thread of the process; throws <see cref="SeccompException"/>.</summary>
    public void Load()
    {
        var rc = Libc.seccomp_load(_context);
        if (rc != 0) throw Failed($"loading the filter failed with {Libc.Describe(-rc)}; the kernel needs SECCOMP_FILTER_FLAG_TSYNC (Linux 3.17)");
        Dispose();
    }

    public void Dispose()
    {
        if (_context != 0) Libc.seccomp_release(_context);
        _context = 0;
    }

    private static SeccompException Failed(string what) => new($"seccomp: {what}; or pass --seccomp none.");
}
