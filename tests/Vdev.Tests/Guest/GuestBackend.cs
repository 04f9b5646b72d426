using System.Diagnostics;
using System.Reflection;

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
    /// The executable is <paramref name="vdevPath"/>, else $HV_VDEV, else the published dist/vdev.
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
        return Hypervisor.Tests.Executables.Vdev;
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

/// <summary>
/// A backend of which ONE process serves several virtio-fs devices (e.g. <c>vdev --config FILE</c> with a
/// <c>vdev virtio-fs</c> block per device). The harness builds its command line once, with every device's
/// socket path, and waits for all of those sockets before starting QEMU.
/// </summary>
public sealed class GuestMultiBackend(string name, Func<GuestMultiBackendContext, ProcessStartInfo> command)
{
    /// <summary>Short name used in reports and as the key prefix of its log in <see cref="GuestResult.ProcessLogs"/>.</summary>
    public string Name { get; } = name;

    /// <summary>Builds the one command line that serves every device.</summary>
    public ProcessStartInfo CreateStartInfo(GuestMultiBackendContext context) => command(context);

    /// <summary>
    /// <c>vdev --config FILE</c> where FILE (written into the boot's temporary directory) holds one
    /// <c>vdev virtio-fs</c> block per device with its host_path, tag and socket, plus the lines
    /// <paramref name="extraBlockLines"/> returns for that device (e.g. <c>cache always</c>).
    /// <paramref name="configWritten"/>, when given, receives the file's path and text (for logs or checks).
    /// </summary>
    public static GuestMultiBackend VdevConfig(string? vdevPath = null, Func<int, GuestDevice, IEnumerable<string>>? extraBlockLines = null,
        Action<string, string>? configWritten = null) =>
        new("vdev", ctx =>
        {
            var exe = vdevPath ?? GuestBackend.ResolveVdev();
            var text = new System.Text.StringBuilder("# written by the guest harness\nsystem guest\nram 512M\n");
            for (int i = 0; i < ctx.Devices.Count; i++)
            {
                var d = ctx.Devices[i];
                text.Append("\nvdev virtio-fs\n");
                text.Append("    host_path ").Append(d.HostDirectory).Append('\n');
                text.Append("    tag ").Append(d.Tag).Append('\n');
                text.Append("    socket ").Append(ctx.SocketPaths[i]).Append('\n');
                if (extraBlockLines is not null)
                    foreach (var line in extraBlockLines(i, d)) text.Append("    ").Append(line).Append('\n');
            }
            var file = Path.Combine(ctx.WorkDirectory, "vm.conf");
            File.WriteAllText(file, text.ToString());
            configWritten?.Invoke(file, text.ToString());
            var psi = new ProcessStartInfo(exe);
            psi.ArgumentList.Add("--config");
            psi.ArgumentList.Add(file);
            return psi;
        });

    public override string ToString() => Name;
}

/// <summary>What a <see cref="GuestMultiBackend"/> command needs: where each device's socket must appear.</summary>
/// <param name="WorkDirectory">The boot's private temporary directory (removed afterwards), e.g. for a configuration file.</param>
/// <param name="SocketPaths">The vhost-user socket of each device, in the order of <paramref name="Devices"/>.</param>
/// <param name="Devices">The devices, in the order QEMU gets them (HV_TAG0, HV_TAG1, …).</param>
public readonly record struct GuestMultiBackendContext(string WorkDirectory, IReadOnlyList<string> SocketPaths, IReadOnlyList<GuestDevice> Devices);

/// <summary>One virtio-fs device of a guest whose backend serves several devices.</summary>
/// <param name="Tag">The tag the guest mounts.</param>
/// <param name="HostDirectory">The host directory behind it.</param>
/// <param name="BackendName">Name reported to the scenario as HV_BACKENDn (set by the harness).</param>
public sealed record GuestDevice(string Tag, string HostDirectory, string BackendName = "");

/// <summary>The guest could not be started for a reason on the host (missing tool, backend not built, ...).</summary>
public sealed class GuestSetupException(string message) : Exception(message);
