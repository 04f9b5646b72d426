using Grpc.Net.Client;
using Hypervisor.Passthrough.Tests.Control;
using Hypervisor.Protocol.Control;
using Hypervisor.Protocol.Share;

namespace Hypervisor.Passthrough.Tests.Mount;

/// <summary>The generated control client on a channel to the daemon's control socket, enough to read the share's counters and change its allowlist from a test.</summary>
internal sealed class ControlClient : IDisposable
{
    private readonly GrpcChannel _channel;
    private readonly ShareControl.ShareControlClient _client;

    public ControlClient(string socketPath)
    {
        _channel = RunningControlServer.CreateChannel(socketPath);
        _client = new ShareControl.ShareControlClient(_channel);
    }

    /// <summary>A client once the control service at <paramref name="socketPath"/> answers (up to 20 s: a daemon reports its mount before its control service accepts calls).</summary>
    public static ControlClient WhenServing(string socketPath)
    {
        var deadline = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            var client = new ControlClient(socketPath);
            try
            {
                client.GetStatus();
                return client;
            }
            catch (Grpc.Core.RpcException e) when (e.StatusCode == Grpc.Core.StatusCode.Unavailable && deadline.Elapsed < TimeSpan.FromSeconds(20))
            {
                client.Dispose();
                Thread.Sleep(100);
            }
        }
    }

    public ShareStatus GetStatus() => _client.GetStatus(new GetStatusRequest(), deadline: Deadline);

    public Allowlist AddAllowedPath(string path) => _client.AddAllowedPath(new AllowedPathRequest { Path = path }, deadline: Deadline);

    public Allowlist RemoveAllowedPath(string path) => _client.RemoveAllowedPath(new AllowedPathRequest { Path = path }, deadline: Deadline);

    public Allowlist SetAllowlistEnabled(bool enabled) => _client.SetAllowlistEnabled(new SetAllowlistEnabledRequest { Enabled = enabled }, deadline: Deadline);

    private static DateTime Deadline => DateTime.UtcNow.AddSeconds(10);

    public void Dispose() => _channel.Dispose();
}
