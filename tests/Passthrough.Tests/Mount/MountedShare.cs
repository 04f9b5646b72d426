using System.Diagnostics;
using System.Text;
using Hypervisor.Interop;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// The real <c>passthrough</c> daemon serving a fresh temporary source directory at a fresh mount point through
/// /dev/fuse (root only). Next to them sits <see cref="LocalDir"/>, a plain directory on the same host filesystem as
/// the source, for differential comparisons. Dispose unmounts, stops the daemon it started (by pid) and removes
/// every temporary directory, whatever state the test left behind.
/// </summary>
public sealed class MountedShare : IDisposable
{
    private readonly Process _daemon;
    private readonly StringBuilder _stderr = new();
    private int _disposed;

    private MountedShare(string root, Process daemon)
    {
        Root = root;
        _daemon = daemon;
    }

    /// <summary>The temporary directory holding source, mount point and local twin.</summary>
    public string Root { get; }

    /// <summary>The shared host directory (what the daemon serves).</summary>
    public string Source => Path.Combine(Root, "src");

    /// <summary>Where the share is mounted.</summary>
    public string MountPoint => Path.Combine(Root, "mnt");

    /// <summary>A plain directory on the same filesystem as <see cref="Source"/>, not served by anything.</summary>
    public string LocalDir => Path.Combine(Root, "local");

    /// <summary>The control socket (only served when started with <see cref="StartWithControl"/>).</summary>
    public string ControlSocket => Path.Combine(Root, "control.sock");

    /// <summary>The daemon's process id.</summary>
    public int Pid => _daemon.Id;

    /// <summary>Whether the daemon process is still running.</summary>
    public bool DaemonAlive => !_daemon.HasExited;

    /// <summary>What the daemon wrote to stderr so far (for failure messages).</summary>
    public string DaemonLog
    {
        get { lock (_stderr) return _stderr.ToString(); }
    }

    /// <summary>
    /// Starts the daemon with <paramref name="extraArgs"/> (e.g. <c>--xattr</c>) and returns once the kernel lists the
    /// mount (fstype fuse.passthrough in /proc/self/mountinfo). Throws with the daemon's stderr when it does not come up.
    /// </summary>
    public static MountedShare Start(params string[] extraArgs) => Start(control: false, extraArgs);

    /// <summary>As <see cref="Start(string[])"/>, with the gRPC control service on <see cref="ControlSocket"/>.</summary>
    public static MountedShare StartWithControl(params string[] extraArgs) => Start(control: true, extraArgs);

    private static MountedShare Start(bool control, string[] extraArgs)
    {
        if (Libc.geteuid() != 0)
            throw new InvalidOperationException("The mount tests need root (they mount through /dev/fuse); run them as root or filter out Category=Root.");
        var root = Directory.CreateTempSubdirectory("pt-mount-").FullName;
        // 0755 so that tests running as another uid can reach the source, the mount and the local twin.
        File.SetUnixFileMode(root, (UnixFileMode)0b111_101_101);
        foreach (var sub in new[] { "src", "mnt", "local" })
        {
            Directory.CreateDirectory(Path.Combine(root, sub));
            File.SetUnixFileMode(Path.Combine(root, sub), (UnixFileMode)0b111_101_101);
        }

        var (file, prefix) = DaemonExecutable.Locate();
        var info = new ProcessStartInfo(file)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (var a in prefix) info.ArgumentList.Add(a);
        info.ArgumentList.Add("--shared-dir");
        info.ArgumentList.Add(Path.Combine(root, "src"));
        info.ArgumentList.Add("--sandbox");
        info.ArgumentList.Add("none");
        info.ArgumentList.Add("--mount");
        info.ArgumentList.Add(Path.Combine(root, "mnt"));
        if (control)
        {
            info.ArgumentList.Add("--control-socket");
            info.ArgumentList.Add(Path.Combine(root, "control.sock"));
        }
        foreach (var a in extraArgs) info.ArgumentList.Add(a);

        Process daemon;
        try
        {
            daemon = Process.Start(info) ?? throw new InvalidOperationException($"Could not start {file}.");
        }
        catch
        {
            Directory.Delete(root, recursive: true);
            throw;
        }
        var share = new MountedShare(root, daemon);
        daemon.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (share._stderr) share._stderr.AppendLine(e.Data); };
        daemon.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (share._stderr) share._stderr.AppendLine(e.Data); };
        daemon.BeginErrorReadLine();
        daemon.BeginOutputReadLine();
        try
        {
            var deadline = Stopwatch.StartNew();
            while (!IsMounted(share.MountPoint))
            {
                if (daemon.HasExited)
                {
                    // The parameterless wait also waits for the redirected output to reach its end, so the log is whole.
                    daemon.WaitForExit();
                    throw new InvalidOperationException($"passthrough exited with {daemon.ExitCode} before mounting:\n{share.DaemonLog}");
                }
                if (deadline.Elapsed > TimeSpan.FromSeconds(30))
                    throw new TimeoutException($"passthrough did not mount {share.MountPoint} within 30 s:\n{share.DaemonLog}");
                Thread.Sleep(20);
            }
            return share;
        }
        catch
        {
            share.Dispose();
            throw;
        }
    }

    /// <summary>Whether /proc/self/mountinfo lists a fuse.passthrough mount at <paramref name="mountPoint"/>.</summary>
    public static bool IsMounted(string mountPoint) => MountFsType(mountPoint) == "fuse.passthrough";

    /// <summary>The filesystem type of the newest mount at <paramref name="mountPoint"/>, or null when none.</summary>
    public static string? MountFsType(string mountPoint)
    {
        // mountinfo: "id parent maj:min root mountpoint options [optional...] - fstype source superopts".
        string? type = null;
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var fields = line.Split(' ');
            if (fields.Length < 7 || Unescape(fields[4]) != mountPoint) continue;
            var dash = Array.IndexOf(fields, "-", 6);
            if (dash > 0 && dash + 1 < fields.Length) type = fields[dash + 1];
        }
        return type;
    }

    private static string Unescape(string field) =>
        field.Contains('\\') ? field.Replace("\\040", " ").Replace("\\011", "\t").Replace("\\012", "\n").Replace("\\134", "\\") : field;

    /// <summary>Unmounts, stops the daemon (SIGTERM, then SIGKILL), removes the temporary directories. Idempotent.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        try
        {
            Unmount();
        }
        finally
        {
            try
            {
                StopDaemon();
            }
            finally
            {
                // A lazily detached mount may linger briefly; never recurse into a live mount.
                for (var i = 0; i < 50 && MountFsType(MountPoint) is not null; i++)
                {
                    Libc.umount2(MountPoint, Libc.MNT_DETACH);
                    Thread.Sleep(20);
                }
                if (MountFsType(MountPoint) is null) RemoveTree(Root);
                _daemon.Dispose();
            }
        }
    }

    /// <summary>
    /// Removes a temporary tree. .NET cannot name entries whose names are not UTF-8 (tests create such names on
    /// purpose), so what it leaves behind goes with rm, which never crosses into another filesystem here.
    /// </summary>
    public static void RemoveTree(string root)
    {
        try
        {
            Directory.Delete(root, recursive: true);
            return;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        using var rm = Process.Start(new ProcessStartInfo("rm", ["-rf", "--one-file-system", root]) { UseShellExecute = false });
        rm?.WaitForExit(60_000);
    }

    /// <summary>Unmounts the share (plain unmount, lazy detach when busy); the daemon then ends its session.</summary>
    public void Unmount()
    {
        if (MountFsType(MountPoint) is null) return;
        if (Libc.umount2(MountPoint, 0) != 0)
            Libc.umount2(MountPoint, Libc.MNT_DETACH);
    }

    private void StopDaemon()
    {
        if (_daemon.HasExited) return;
        // Only this pid: the daemon this fixture started.
        Libc.kill(_daemon.Id, Libc.SIGTERM);
        if (_daemon.WaitForExit(5000)) return;
        Libc.kill(_daemon.Id, Libc.SIGKILL);
        _daemon.WaitForExit(5000);
    }

    /// <summary>Waits up to <paramref name="timeout"/> for the daemon to exit; returns its exit code or null.</summary>
    public int? WaitForExit(TimeSpan timeout) => _daemon.WaitForExit(timeout) ? _daemon.ExitCode : null;

    /// <summary>VmHWM and VmRSS of the daemon in KiB, from /proc/PID/status.</summary>
    public (long PeakKiB, long CurrentKiB) Memory()
    {
        long hwm = 0, rss = 0;
        foreach (var line in File.ReadLines($"/proc/{Pid}/status"))
        {
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) hwm = ParseKiB(line);
            else if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = ParseKiB(line);
        }
        return (hwm, rss);
    }

    private static long ParseKiB(string line) => long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
}
