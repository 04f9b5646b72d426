using Hypervisor.Interop;

namespace Hypervisor.Protocol.Ring;

/// <summary>
/// Decides whether a thread waiting for its peer (the other end of a ring, in the other process) may busy-poll
/// before it sleeps on a doorbell. Spinning can only pay when the peer can run at the same time on another CPU:
/// a peer that may only run on the very CPU the spinner occupies makes no progress while the spinner spins, so
/// the spin is lost time and delays the peer it waits for. The decision is taken from CPU affinity masks, which
/// the kernel already narrows to the CPUs that are online (a host with one CPU online gives masks of one CPU):
/// the waiting thread's own mask and the peer's (its process's mask, narrowed to the CPU it is pinned to when
/// both ends know it, as with <c>--queue-cpus</c>).
/// </summary>
public static class SpinPolicy
{
    /// <summary>
    /// Whether a thread allowed on the CPUs of <paramref name="own"/> and a peer allowed on those of
    /// <paramref name="peer"/> can run at the same time on two different CPUs (masks as
    /// <c>sched_getaffinity(2)</c> fills them: bit <c>n</c> of byte <c>n / 8</c> is CPU <c>n</c>). False when either
    /// mask is empty or both are the same single CPU.
    /// </summary>
    public static bool CanRunBeside(ReadOnlySpan<byte> own, ReadOnlySpan<byte> peer)
    {
        int ownFirst = -1, ownCount = 0, peerFirst = -1, peerCount = 0;
        Count(own, ref ownFirst, ref ownCount);
        Count(peer, ref peerFirst, ref peerCount);
        if (ownCount == 0 || peerCount == 0) return false;
        // Two CPUs on either side leave the other side a CPU of its own; one each, they must differ.
        return ownCount > 1 || peerCount > 1 || ownFirst != peerFirst;
    }

    private static void Count(ReadOnlySpan<byte> mask, ref int first, ref int count)
    {
        for (int i = 0; i < mask.Length; i++)
        {
            byte b = mask[i];
            if (b == 0) continue;
            if (first < 0) first = i * 8 + System.Numerics.BitOperations.TrailingZeroCount((uint)b);
            count += System.Numerics.BitOperations.PopCount(b);
        }
    }

    /// <summary>
    /// Whether the calling thread, as it is placed now, may spin waiting for a peer: process
    /// <paramref name="peerPid"/> (0 when it cannot be named, e.g. from inside a pid namespace of its own; then
    /// <paramref name="peerMaskIfUnknown"/> stands for its mask), whose thread at the other end runs on
    /// <paramref name="peerCpu"/> alone when that is 0 or more. A peer whose mask cannot be read counts as able
    /// to run anywhere the caller's process may.
    /// </summary>
    public static bool CurrentThreadCanSpinFor(int peerPid, int peerCpu, ReadOnlySpan<byte> peerMaskIfUnknown = default)
    {
        Span<byte> own = stackalloc byte[Libc.CpuMaskBytes];
        Span<byte> peer = stackalloc byte[Libc.CpuMaskBytes];
        // glibc zeroes the part of the mask beyond the kernel's.
        if (Libc.sched_getaffinity(0, Libc.CpuMaskBytes, own) != 0) return false;
        peer.Clear();
        bool known = peerPid > 0 && Libc.sched_getaffinity(peerPid, Libc.CpuMaskBytes, peer) == 0;
        if (!known && !peerMaskIfUnknown.IsEmpty) peerMaskIfUnknown[..Math.Min(peerMaskIfUnknown.Length, peer.Length)].CopyTo(peer);
        else if (!known && Libc.sched_getaffinity(Environment.ProcessId, Libc.CpuMaskBytes, peer) != 0) return false;
        // Pinned: the peer's thread runs on that CPU alone, if its process may run there (else its pinning failed
        // and it runs anywhere its process may).
        if (peerCpu >= 0 && peerCpu < Libc.CpuMaskBytes * 8 && (peer[peerCpu >> 3] & (1 << (peerCpu & 7))) != 0)
        {
            peer.Clear();
            peer[peerCpu >> 3] = (byte)(1 << (peerCpu & 7));
        }
        return CanRunBeside(own, peer);
    }

    /// <summary>The calling thread's affinity mask (<see cref="Libc.CpuMaskBytes"/> bytes), e.g. to stand for a peer that inherited it.</summary>
    public static byte[] CurrentThreadMask()
    {
        var mask = new byte[Libc.CpuMaskBytes];
        if (Libc.sched_getaffinity(0, Libc.CpuMaskBytes, mask) != 0) throw SyscallException.Last("sched_getaffinity");
        return mask;
    }
}
