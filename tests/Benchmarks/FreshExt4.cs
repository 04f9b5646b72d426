using System.Diagnostics;

namespace Hypervisor.Benchmarks;

/// <summary>
/// A new ext4 filesystem mounted on a loop device over a sparse image in /dev/shm (no disk involved), unmounted and
/// deleted on dispose. A benchmark share on one starts from the same filesystem state every time; a directory on the
/// host's own filesystem inherits its history instead, and ext4's inode allocator can then spend most of a
/// file-creating row skipping inodes that earlier runs deleted.
/// </summary>
internal sealed class FreshExt4 : IDisposable
{
    private readonly string _image;
    private readonly object _gate = new();
    private bool _mounted;
    private IDisposable? _interruption;

    public string MountPoint { get; }

    public FreshExt4(string name, string mountPoint, long bytes)
    {
        MountPoint = mountPoint;
        _image = Path.Combine("/dev/shm", name + ".img");
        try
        {
            using (var f = File.Create(_image)) f.SetLength(bytes);
            HostCommand.Run("mkfs.ext4", "-q", "-F", _image);
            Directory.CreateDirectory(mountPoint);
            _interruption = Interruption.Register(Dispose);
            HostCommand.Run("mount", "-o", "loop", _image, mountPoint);
            _mounted = true;
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Unmounts (lazily if the filesystem is still busy) and deletes the image; also run on an interruption.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_mounted && !HostCommand.TryRun("umount", MountPoint)) HostCommand.Run("umount", "-l", MountPoint);
            _mounted = false;
            File.Delete(_image);
            if (Directory.Exists(MountPoint)) Directory.Delete(MountPoint);
            _interruption?.Dispose();
        }
    }
}

/// <summary>Runs host commands for the benchmarks' setup and cleanup.</summary>
internal static class HostCommand
{
    /// <summary>Runs <paramref name="exe"/> to completion; throws when it exits non-zero.</summary>
    public static void Run(string exe, params string[] args)
    {
        using var p = Process.Start(Info(exe, args, quiet: false))!;
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{exe} {string.Join(' ', args)} failed with exit code {p.ExitCode}");
    }

    /// <summary>Runs <paramref name="exe"/> to completion; false when it exits non-zero (its errors are shown).</summary>
    public static bool TryRun(string exe, params string[] args)
    {
        using var p = Process.Start(Info(exe, args, quiet: false))!;
        p.WaitForExit();
        return p.ExitCode == 0;
    }

    /// <summary>Runs <paramref name="exe"/> to completion, its errors discarded and its exit status ignored.</summary>
    public static void RunQuiet(string exe, params string[] args)
    {
        using var p = Process.Start(Info(exe, args, quiet: true))!;
        p.WaitForExit();
    }

    private static ProcessStartInfo Info(string exe, string[] args, bool quiet)
    {
        var psi = new ProcessStartInfo(exe) { RedirectStandardError = quiet };
        foreach (var a in args) psi.ArgumentList.Add(a);
        return psi;
    }
}
