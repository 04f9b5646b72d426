using Hypervisor.Protocol.Ring;

namespace Hypervisor.Protocol.Tests.Ring;

public class SpinPolicyTests
{
    private static byte[] Mask(params int[] cpus)
    {
        var mask = new byte[128];
        foreach (int cpu in cpus) mask[cpu >> 3] |= (byte)(1 << (cpu & 7));
        return mask;
    }

    [Theory]
    [InlineData(new[] { 1 }, new[] { 1 }, false)]          // both ends pinned to one CPU (--queue-cpus, or a one-CPU backend)
    [InlineData(new[] { 0 }, new[] { 0 }, false)]
    [InlineData(new[] { 70 }, new[] { 70 }, false)]        // beyond the first byte and the first word of the mask
    [InlineData(new[] { 0 }, new[] { 1 }, true)]           // pinned apart
    [InlineData(new[] { 0, 1 }, new[] { 1 }, true)]        // the spinner can leave the peer's CPU to it
    [InlineData(new[] { 1 }, new[] { 0, 1 }, true)]        // the peer can run on the other CPU
    [InlineData(new[] { 0, 1 }, new[] { 0, 1 }, true)]     // unpinned on two CPUs
    [InlineData(new[] { 3 }, new[] { 64 }, true)]
    [InlineData(new int[0], new[] { 0, 1 }, false)]        // a mask that could not be read
    [InlineData(new[] { 0, 1 }, new int[0], false)]
    public void CanRunBeside_OnlyWhenTheTwoCanRunOnDifferentCpusAtOnce(int[] own, int[] peer, bool expected)
        => Assert.Equal(expected, SpinPolicy.CanRunBeside(Mask(own), Mask(peer)));

    [Fact]
    public void CurrentThreadCanSpinFor_APeerPinnedToTheCallersOnlyCpuIsNotWorthASpin()
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
            int cpu = Hypervisor.Protocol.Share.QueueCpus.AllowedCpus()[^1];
            Assert.True(Hypervisor.Protocol.Share.QueueCpus.TryPinCurrentThread(cpu, out _));
            // The peer stands for a process that inherited this thread's mask and pinned its end to the same CPU.
            Assert.False(SpinPolicy.CurrentThreadCanSpinFor(0, cpu, SpinPolicy.CurrentThreadMask()));
            Assert.False(SpinPolicy.CurrentThreadCanSpinFor(0, -1, Mask(cpu)));
            Assert.True(SpinPolicy.CurrentThreadCanSpinFor(0, -1, Mask(cpu, cpu + 1)));
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        thread.Start();
        thread.Join();
        Assert.Null(failure);
    }
}
