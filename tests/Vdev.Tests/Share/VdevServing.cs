using System.Diagnostics;
using Hypervisor.Protocol.VhostUser;
using Hypervisor.Vdev.Tests.Frontend;

namespace Hypervisor.Vdev.Tests.Share;

/// <summary>
/// Waits for a started vdev as a VMM does: its socket exists as soon as the vdev listens, before its shares have started
/// (vdev/README.md, "When the socket appears"); the answer to GET_FEATURES comes once every share serves.
/// </summary>
internal static class VdevServing
{
    /// <summary>
    /// Connects to <paramref name="socket"/> once it exists and returns the connection after the vdev answered
    /// GET_FEATURES, i.e. once its shares are started, its filter loaded and its device accepting. The caller keeps the
    /// connection open while it looks at the running vdev (without <c>--keep-listening</c> the vdev exits when it closes).
    /// </summary>
    public static VhostUserFrontend Connect(Process vdev, string socket)
    {
        var deadline = Environment.TickCount64 + 30_000;
        while (!File.Exists(socket) && !vdev.HasExited && Environment.TickCount64 < deadline) Thread.Sleep(20);
        Xunit.Assert.True(File.Exists(socket), vdev.HasExited ? $"the vdev exited with {vdev.ExitCode}" : "the vdev did not listen");
        // The first reply waits as long as the connection may take (the shares' start).
        var frontend = VhostUserFrontend.Connect(socket, TimeSpan.FromSeconds(30));
        try
        {
            frontend.GetU64(VhostUserRequest.GetFeatures);
            return frontend;
        }
        catch
        {
            frontend.Dispose();
            throw;
        }
    }
}
