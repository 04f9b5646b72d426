using System.Reflection;
using Hypervisor.Interop;
using Hypervisor.Protocol.Ring;
using Hypervisor.Vdev.Device;
using Hypervisor.Vdev.Virtio;

namespace Hypervisor.Vdev.Tests.Device;

/// <summary>
/// A queue's worker must never go to sleep on its kick alone while its daemon is being replaced: the guest then waits
/// for replies that only a wake-up at the relaunch would send again, and kicks no more.
/// </summary>
public sealed class RecoveringTransportWakeupTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(10);

    private sealed class Sink : IFuseCompletionSink
    {
        public bool Complete(ulong tag, ReadOnlySpan<byte> reply) => false;

        public bool CompleteQuietly(ulong tag, ReadOnlySpan<byte> reply) => false;

        public void NotifyGuest(QueueIndex queue)
        {
        }

        public void TransportFailed(string reason)
        {
        }
    }

    [Fact]
    public void AWorkerArmingWhileAnotherReportsTheDaemonsEnd_SleepsOnTheRelaunch_NotOnItsKickAlone()
    {
        using var relauncher = new InProcessRelauncher();
        var transport = (IPolledFuseTransport)RecoveringTransport.Factory(relauncher, T, new ListLogger())
            .Create(new FuseDeviceInfo("t", 1, 64), new Sink());
        try
        {
            // Both queues' workers have started on the daemon (the first poll joins a queue to the serving daemon).
            Assert.Equal(0, transport.Poll(new QueueIndex(0)));
            Assert.Equal(0, transport.Poll(new QueueIndex(1)));
            // The window between one thread failing the ring transport and that thread marking the daemon's generation
            // dead is held open: the marking takes the transport's lock, which this test holds.
            var lockField = typeof(RecoveringTransport).GetField("_lock", BindingFlags.NonPublic | BindingFlags.Instance);
            Assert.True(lockField is not null, "RecoveringTransport no longer has the lock this test holds");
            object gate = lockField.GetValue(transport)!;
            int replyFd = -2, peerExitFd = -2;
            bool armed = false;
            Thread? reporter = null, armer = null;
            Monitor.Enter(gate);
            try
            {
                // The daemon closes its rings; the hiprio queue's worker is the first to see it and reports it.
                relauncher.Daemons[0].Close();
                reporter = new Thread(() => transport.Poll(new QueueIndex(0))) { IsBackground = true };
                reporter.Start();
                // Blocked on the lock means it failed the ring transport and is marking the generation.
                Assert.True(SpinWait.SpinUntil(() => (reporter.ThreadState & ThreadState.WaitSleepJoin) != 0, T), "the reporting thread never reached the lock");
                // The request queue's worker arms its wake-up meanwhile.
                armer = new Thread(() => armed = transport.ArmWakeup(new QueueIndex(1), out replyFd, out peerExitFd)) { IsBackground = true };
                armer.Start();
                // Given time to arm inside the window; a worker that waits for the mark is still waiting when the window ends.
                armer.Join(TimeSpan.FromSeconds(1));
            }
            finally
            {
                Monitor.Exit(gate);
            }
            Assert.True(reporter.Join(T), "the reporting thread did not finish");
            Assert.True(armer.Join(T), "the arming worker did not finish");
            Assert.True(relauncher.Relaunched.Wait(T), "no relaunch was started");
            if (armed)
            {
                // Sleeping: it must have a descriptor besides its kick that the relaunch makes readable.
                Assert.True(replyFd >= 0, "the worker would sleep on its kick alone through the relaunch");
                Assert.True(Libc.PollReadable(new SafeFd(replyFd, ownsHandle: false), (int)T.TotalMilliseconds) > 0, "the relaunch did not wake the worker");
            }
            // Not armed: the worker polls again instead of sleeping, which finds the new daemon.
        }
        finally
        {
            ((IDisposable)transport).Dispose();
        }
    }
}
