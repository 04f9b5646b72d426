using System.Diagnostics;
using System.Text.Json;
using Hypervisor.Vdev.Control;
using Hypervisor.Protocol.Share;
using Hypervisor.Vdev.Tests.Frontend;
using Hypervisor.Vdev.Tests.Guest;

namespace Hypervisor.Vdev.Tests.Share;

/// <summary>
/// <c>--queue-cpus</c> end to end: the vdev process, fuse_launcher and the passthrough daemon it starts, and a
/// vhost-user frontend that starts the queues. Each request queue's two ends (the vdev's worker vqN, the daemon's
/// dispatcher ring-qN) run on the CPU given for it, or one CPU each in turn when none is given, or anywhere with
/// <c>none</c>; read back from /proc as the kernel enforces it.
/// </summary>
public sealed class QueueCpusPlacementTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-cpus-").FullName;

    [Fact]
    public void EachRequestQueuesWorkerAndDaemonDispatcher_RunOnTheCpuGivenForIt_HiprioStaysFree()
    {
        var allowed = QueueCpus.AllowedCpus();
        Assert.True(allowed.Count >= 2, "this test needs two CPUs to tell a placement from the default");
        // Reversed, so that neither queue lands on its CPU by counting from 0 (as the default does).
        string cpu1 = $"{allowed[^1]}", cpu2 = $"{allowed[0]}", free = AllowedList(Environment.ProcessId, Environment.ProcessId);
        var seen = Placements(["--request-queues", "2", "--queue-cpus", $"{cpu1},{cpu2}"]);
        Assert.Equal([cpu1, cpu2, free, cpu1, cpu2, free], seen);
    }

    [Fact]
    public void TwoRequestQueuesWithoutAList_EachGoesWithBothItsEndsToACpuOfItsOwn()
    {
        var allowed = QueueCpus.AllowedCpus();
        Assert.True(allowed.Count >= 2, "this test needs two CPUs");
        string cpu1 = $"{allowed[0]}", cpu2 = $"{allowed[1]}", free = AllowedList(Environment.ProcessId, Environment.ProcessId);
        Assert.Equal([cpu1, cpu2, free, cpu1, cpu2, free], Placements(["--request-queues", "2"]));
    }

    [Fact]
    public void QueueCpusNone_LeavesEveryQueueWhereTheSchedulerPutsIt()
    {
        string free = AllowedList(Environment.ProcessId, Environment.ProcessId);
        Assert.Equal([free, free, free, free, free, free], Placements(["--request-queues", "2", "--queue-cpus", "none"]));
    }

    /// <summary>
    /// Starts the vdev with two request queues and <paramref name="args"/>, starts its queues from a frontend and
    /// returns where vq1, vq2, vq0 (the vdev's workers) and ring-q1, ring-q2, ring-q0 (the daemon's dispatchers) may
    /// run, as /proc lists them.
    /// </summary>
    private string[] Placements(string[] args)
    {
        var share = Directory.CreateDirectory(Path.Combine(_dir, "share")).FullName;
        var socket = Path.Combine(_dir, "vdev.sock");
        var psi = new ProcessStartInfo(GuestBackend.ResolveVdev()) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { "--socket-path", socket, "--shared-dir", share, "--tag", "cpus", "--log-level", "warn" }.Concat(args))
            psi.ArgumentList.Add(a);
        using var vdev = Process.Start(psi)!;
        vdev.BeginErrorReadLine();
        vdev.BeginOutputReadLine();
        int daemon = -1;
        try
        {
            using var fe = VhostUserFrontend.Connect(socket, TimeSpan.FromSeconds(30));
            using var ram = new GuestRam(16 << 20);
            fe.Negotiate();
            fe.SetMemTable(ram);
            fe.SetupQueues(ram, 3, 64, 4096);

            daemon = DaemonOf(share);
            string[] seen =
            [
                Placement(vdev.Id, "vq1"), Placement(vdev.Id, "vq2"), Placement(vdev.Id, "vq0"),
                Placement(daemon, "ring-q1"), Placement(daemon, "ring-q2"), Placement(daemon, "ring-q0"),
            ];
            // The share's status reports the same placement of the dispatchers (-1: not pinned) to an operator.
            var stdout = new StringWriter();
            Assert.Equal(0, CtlCommand.Run(["--socket", socket + ".ctl", "--json", "status"], stdout, new StringWriter()));
            var reported = JsonDocument.Parse(stdout.ToString()).RootElement.GetProperty("queue_cpus").EnumerateArray().Select(e => e.GetInt32());
            Assert.Equal(seen[3..5].Select(list => list.Contains(',') || list.Contains('-') ? -1 : int.Parse(list)), reported);
            return seen;
        }
        finally
        {
            if (!vdev.HasExited) vdev.Kill();
            vdev.WaitForExit();
            // The vdev's SIGKILL leaves its daemon to notice the ring's peer died; do not wait for that.
            if (daemon > 0 && !IsExited(daemon)) Process.GetProcessById(daemon).Kill();
        }
    }

    /// <summary>The CPUs thread <paramref name="name"/> of <paramref name="pid"/> may run on, once it exists.</summary>
    private static string Placement(int pid, string name)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (DateTime.UtcNow < deadline)
        {
            foreach (var task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
            {
                if (TryRead($"{task}/comm")?.Trim() == name) return AllowedList(pid, int.Parse(Path.GetFileName(task)));
            }
            Thread.Sleep(50);
        }
        throw new TimeoutException($"process {pid} has no thread {name}");
    }

    private static string AllowedList(int pid, int tid) =>
        File.ReadAllLines($"/proc/{pid}/task/{tid}/status").First(l => l.StartsWith("Cpus_allowed_list:", StringComparison.Ordinal)).Split(':')[1].Trim();

    /// <summary>The passthrough daemon serving <paramref name="share"/>, once fuse_launcher has started it.</summary>
    private static int DaemonOf(string share)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (DateTime.UtcNow < deadline)
        {
            foreach (var dir in Directory.EnumerateDirectories("/proc"))
            {
                if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
                var argv = TryRead($"{dir}/cmdline")?.Split('\0') ?? [];
                if (argv.Any(a => a.EndsWith("passthrough", StringComparison.Ordinal) || a.EndsWith("passthrough.dll", StringComparison.Ordinal)) && argv.Contains(share))
                    return pid;
            }
            Thread.Sleep(50);
        }
        throw new TimeoutException($"no passthrough daemon serves {share}");
    }

    private static bool IsExited(int pid) => TryRead($"/proc/{pid}/stat") is not { } stat || stat[(stat.LastIndexOf(')') + 2)..].StartsWith('Z');

    private static string? TryRead(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
