using System.Diagnostics;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>
/// A vhost-user-fs backend the guest harness starts once per share: a name for reports and the
/// command line that serves <c>SharedDirectory</c> on a listening vhost-user socket at
/// <c>SocketPath</c>. The backend must create that socket before QEMU connects, serve one
/// connection, and exit (or be killed) when QEMU goes away.
/// </summary>
public sealed class GuestBackend
{
    /// <summary>The QEMU package's C reference daemon.</summary>
    public const string VirtiofsdPath = "/usr/lib/qemu/virtiofsd";

    private readonly Func<GuestBackendContext, ProcessStartInfo> _command;

    public GuestBackend(string name, Func<GuestBackendContext, ProcessStartInfo> command)
    {
        Name = name;
        _command = command;
    }

    /// <summary>Short name used in reports and benchmark tables ("virtiofsd", "vdev").</summary>
    public string Name { get; }

    /// <summary>Builds the command line for one share.</summary>
    public ProcessStartInfo CreateStartInfo(GuestBackendContext context) => _command(context);

    /// <summary>
    /// QEMU's C virtiofsd. <c>--rlimit-nofile=0</c> keeps it from trying to raise RLIMIT_NOFILE,
    /// which is capped on these machines and would make it exit at start-up.
    /// </summary>
    public static GuestBackend Virtiofsd(string cache = "auto", int threadPoolSize = 0, params string[] extraArgs) =>
        new("virtiofsd", ctx =>
        {
            if (!File.Exists(VirtiofsdPath))
                throw new GuestSetupException($"{VirtiofsdPath} is missing: install the qemu-system-common package.");
            var psi = new ProcessStartInfo(VirtiofsdPath);
            psi.ArgumentList.Add("--socket-path=" + ctx.SocketPath);
            psi.ArgumentList.Add("-o");
            psi.ArgumentList.Add("source=" + ctx.SharedDirectory);
            psi.ArgumentList.Add("-o");
            psi.ArgumentList.Add("cache=" + cache);
            psi.ArgumentList.Add("--thread-pool-size=" + threadPoolSize);
            psi.ArgumentList.Add("--rlimit-nofile=0");
            foreach (var a in extraArgs) psi.ArgumentList.Add(a);
            return psi;
        });

    /// <summary>
    /// The project's vdev in its single-share, virtiofsd-compatible mode
    /// (<c>--socket-path S --shared-dir D --tag T --cache C</c> plus <paramref name="extraArgs"/>).
    /// The executable is <paramref name="vdevPath"/>, else $HV_VDEV, else the newest built
    /// vdev/bin/*/net10.0/vdev under the repository; <see cref="GuestSetupException"/> when none exists.
    /// </summary>
    public static GuestBackend Vdev(string? vdevPath = null, string cache = "auto", params string[] extraArgs) =>
        new("vdev", ctx =>
        {
            var exe = vdevPath ?? ResolveVdev();
            var psi = new ProcessStartInfo(exe);
            // The single-share command line of config/README.md ("OPTION VALUE" pairs).
            foreach (var a in new[] { "--socket-path", ctx.SocketPath, "--shared-dir", ctx.SharedDirectory, "--tag", ctx.Tag, "--cache", cache })
                psi.ArgumentList.Add(a);
            foreach (var a in extraArgs) psi.ArgumentList.Add(a);
            return psi;
        });

    /// <summary>Resolves "virtiofsd" or "vdev" with default options (used by test theories).</summary>
    public static GuestBackend ByName(string name) => name switch
    {
        "virtiofsd" => Virtiofsd(),
        "vdev" => Vdev(),
        _ => throw new ArgumentException($"Unknown guest backend '{name}': use 'virtiofsd' or 'vdev'.", nameof(name)),
    };

    /// <summary>Finds the built vdev executable; throws a one-sentence fix when it is not built.</summary>
    public static string ResolveVdev()
    {
        var env = Environment.GetEnvironmentVariable("HV_VDEV");
        if (!string.IsNullOrEmpty(env))
        {
            if (!File.Exists(env)) throw new GuestSetupException($"HV_VDEV points to {env}, which does not exist: build vdev or fix HV_VDEV.");
            return env;
        }
        string? best = null;
        var binDir = Path.Combine(GuestVm.RepositoryRoot, "vdev", "bin");
        if (Directory.Exists(binDir))
        {
            foreach (var candidate in Directory.EnumerateFiles(binDir, "vdev", SearchOption.AllDirectories))
            {
                if (best is null || File.GetLastWriteTimeUtc(candidate) > File.GetLastWriteTimeUtc(best)) best = candidate;
            }
        }
        return best ?? throw new GuestSetupException(
            $"The vdev backend is not built: run `dotnet build vdev/Vdev.csproj` in {GuestVm.RepositoryRoot} or set HV_VDEV to the vdev executable.");
    }

    public override string ToString() => Name;
}

/// <summary>What a backend command needs to know about the share it serves.</summary>
/// <param name="SocketPath">Where the backend must create its listening vhost-user socket.</param>
/// <param name="SharedDirectory">The host directory to export.</param>
/// <param name="Tag">The virtio-fs tag the guest mounts (QEMU sets it on the device; vdev may also want it).</param>
public readonly record struct GuestBackendContext(string SocketPath, string SharedDirectory, string Tag);

/// <summary>One virtio-fs device of the guest: its tag, the host directory and the backend serving it.</summary>
public sealed record GuestShare(string Tag, string HostDirectory, GuestBackend Backend);

/// <summary>The guest could not be started for a reason on the host (missing tool, backend not built, ...).</summary>
public sealed class GuestSetupException(string message) : Exception(message);
