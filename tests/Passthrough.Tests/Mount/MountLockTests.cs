using System.Diagnostics;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>
/// POSIX byte-range locks through the /dev/fuse mount between processes, compared with a plain directory on the
/// host; a waiter killed with SIGKILL (the kernel sends INTERRUPT) and a waiter behind a lock taken on the host
/// file directly.
/// </summary>
[Trait("Category", "Root")]
public sealed class MountLockTests
{
    /// <summary>
    /// One process holds [0,10) for writing; a second one asks for overlapping, shared and disjoint ranges, reads
    /// F_GETLK, and after the release asks again; then two processes close a cycle (each holds one byte and waits for
    /// the other's): the kernel answers one of them EDEADLK.
    /// </summary>
    private const string TwoProcessesScript = """
import errno, fcntl, os, struct, sys, time
path = os.path.join(sys.argv[1], "locks.txt")
with open(path, "w") as f:
    f.write("0123456789abcdefghij")
def err(call):
    try:
        call()
        return "0"
    except OSError as e:
        return errno.errorcode[e.errno]
r, w = os.pipe()
go_r, go_w = os.pipe()
holder = os.fork()
if holder == 0:
    fd = os.open(path, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
    os.write(w, b"1")
    os.read(go_r, 1)
    os._exit(0)
os.read(r, 1)
fd = os.open(path, os.O_RDWR)
out = []
out.append("overlap " + err(lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 5)))
out.append("shared " + err(lambda: fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 0)))
out.append("disjoint " + err(lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 10)))
probe = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 5, 1, 0)
t, wh, start, length, pid = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, probe)[:struct.calcsize("hhqqi")])
out.append("getlk type=%d start=%d len=%d holder=%s" % (t, start, length, pid == holder))
os.write(go_w, b"1")
os.waitpid(holder, 0)
out.append("after " + err(lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 5)))
os.close(fd)
# The cycle: the parent holds byte 0 and waits for byte 1; the child holds byte 1 and then waits for byte 0.
up_r, up_w = os.pipe(); down_r, down_w = os.pipe(); res_r, res_w = os.pipe()
child = os.fork()
if child == 0:
    cfd = os.open(path, os.O_RDWR)
    fcntl.lockf(cfd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 1)
    os.write(up_w, b"1"); os.read(down_r, 1)
    time.sleep(1)
    os.write(res_w, err(lambda: fcntl.lockf(cfd, fcntl.LOCK_EX, 1, 0)).encode())
    os._exit(0)
pfd = os.open(path, os.O_RDWR)
fcntl.lockf(pfd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
os.read(up_r, 1); os.write(down_w, b"1")
parent = err(lambda: fcntl.lockf(pfd, fcntl.LOCK_EX, 1, 1))
out.append("cycle parent=%s child=%s" % (parent, os.read(res_r, 16).decode()))
os.waitpid(child, 0)
print("\n".join(out))
""";

    [Fact]
    public void TwoProcesses_ByteRangeLocks_ConflictAsOnAPlainDirectory()
    {
        using var share = MountedShare.Start();
        var plain = Python(TwoProcessesScript, share.LocalDir);
        var mounted = Python(TwoProcessesScript, share.MountPoint);
        Assert.Contains("overlap EAGAIN", plain);
        Assert.Contains("cycle parent=0 child=EDEADLOCK", plain); // Python names errno 35 (EDEADLK) so
        Assert.Equal(plain, mounted);
    }

    /// <summary>
    /// A process waits in F_SETLKW behind another's lock and is killed: it must be gone while the lock is still
    /// held (the kernel's INTERRUPT ends the daemon's wait), and the daemon must not take the lock for it later: once
    /// the holder lets go, a third process gets the lock without waiting.
    /// </summary>
    [Fact]
    public void Waiter_KilledWithSigkill_LeavesWhileTheLockIsHeld_AndItsWaitIsCancelled()
    {
        using var share = MountedShare.Start();
        var path = Path.Combine(share.MountPoint, "kill.txt");
        File.WriteAllText(path, "k");
        using var holder = StartPython(HoldScript, path);
        using var waiter = StartPython(WaitScript, path, start: false);
        try
        {
            Assert.Equal("held", holder.StandardOutput.ReadLine());
            waiter.Start();
            Assert.Equal("waiting", waiter.StandardOutput.ReadLine());
            // The waiter is inside fcntl(F_SETLKW) now or about to be; either way it may only leave by the signal.
            Thread.Sleep(500);
            Assert.False(waiter.HasExited, "F_SETLKW returned while another process held the lock");
            waiter.Kill();
            Assert.True(waiter.WaitForExit(30_000), "the killed waiter stayed while the lock was held: its F_SETLKW was not interrupted");
            Assert.False(holder.HasExited);

            holder.StandardInput.Close(); // the holder releases and exits
            Assert.True(holder.WaitForExit(30_000));
            // Had the daemon kept the killed waiter's request, the release would have handed it the lock at once.
            Thread.Sleep(500);
            Assert.Equal("0", Python(TryScript, path));
        }
        finally
        {
            Stop(holder, waiter);
        }
    }

    /// <summary>A process on the mount waits behind a lock a host process took on the shared file itself, and gets it when the host releases.</summary>
    [Fact]
    public void Waiter_BehindAHostProcessLock_GetsTheLockWhenTheHostReleases()
    {
        using var share = MountedShare.Start();
        File.WriteAllText(Path.Combine(share.Source, "host.txt"), "h");
        using var holder = StartPython(HoldScript, Path.Combine(share.Source, "host.txt"));
        var path = Path.Combine(share.MountPoint, "host.txt");
        using var waiter = StartPython(WaitScript, path, start: false);
        try
        {
            Assert.Equal("held", holder.StandardOutput.ReadLine());
            Assert.Equal("EAGAIN", Python(TryScript, path));
            waiter.Start();
            Assert.Equal("waiting", waiter.StandardOutput.ReadLine());
            Thread.Sleep(500);
            Assert.False(waiter.HasExited, "F_SETLKW returned while the host process held the lock");
            holder.StandardInput.Close();
            Assert.True(holder.WaitForExit(30_000));
            Assert.True(waiter.WaitForExit(30_000), "the waiter did not get the lock after the host released it");
            Assert.Equal("granted", waiter.StandardOutput.ReadToEnd().Trim());
        }
        finally
        {
            Stop(holder, waiter);
        }
    }

    private const string HoldScript = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
print("held", flush=True)
sys.stdin.read()
""";

    private const string WaitScript = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
print("waiting", flush=True)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
print("granted", flush=True)
""";

    private const string TryScript = """
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    print("0")
except OSError as e:
    print(errno.errorcode[e.errno])
""";

    private static string Python(string script, string arg) => FsOpsScript.Run(TimeSpan.FromSeconds(60), "-c", script, arg).Trim();

    private static Process StartPython(string script, string arg, bool start = true)
    {
        var info = new ProcessStartInfo(FsOpsScript.Python) { RedirectStandardOutput = true, RedirectStandardInput = true, UseShellExecute = false };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add(script);
        info.ArgumentList.Add(arg);
        var process = new Process { StartInfo = info };
        if (start) process.Start();
        return process;
    }

    /// <summary>Kills the processes this test started that are still running (only these, by their own handles).</summary>
    private static void Stop(params Process[] processes)
    {
        foreach (var p in processes)
        {
            try
            {
                if (!p.HasExited)
                {
                    p.Kill();
                    p.WaitForExit(10_000);
                }
            }
            catch (InvalidOperationException)
            {
                // Never started.
            }
        }
    }
}
