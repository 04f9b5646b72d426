using Hypervisor.Logging;
using Hypervisor.Passthrough.Control;
using Hypervisor.Protocol.Control;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Tests.Control;

/// <summary>
/// The daemon's logger factory as the control server sees it, and the service's ordering of what it returns: the
/// frameworks keep their warnings, the request diagnostics are off, and lists already in order are left as they are.
/// </summary>
public sealed class ControlLoggingTests
{
    [Fact]
    public void DaemonLoggerFactory_KeepsFrameworkWarningsAndTurnsTheRequestDiagnosticsOff()
    {
        using ILoggerFactory factory = StderrLogging.Create(LogLevel.Information, ["Microsoft", "Grpc"], ControlServer.SilentLogCategories);

        ILogger diagnostics = factory.CreateLogger("Microsoft.AspNetCore.Hosting.Diagnostics");
        foreach (LogLevel level in new[] { LogLevel.Trace, LogLevel.Information, LogLevel.Warning, LogLevel.Critical })
            Assert.False(diagnostics.IsEnabled(level));

        foreach (string category in new[] { "Microsoft.AspNetCore.Server.Kestrel", "Microsoft.AspNetCore.Hosting.Lifetime", "Grpc.AspNetCore.Server.ServerCallHandler" })
        {
            ILogger framework = factory.CreateLogger(category);
            Assert.True(framework.IsEnabled(LogLevel.Warning));
            Assert.False(framework.IsEnabled(LogLevel.Information));
        }
        Assert.True(factory.CreateLogger("Hypervisor.Passthrough.Control").IsEnabled(LogLevel.Information));
    }

    [Fact]
    public void Sorted_OrdersWhatIsOutOfOrderAndLeavesWhatIsInOrder()
    {
        var unordered = new Allowlist { Entries = { "b", "a/c", "a" } };
        Assert.Equal(["a", "a/c", "b"], ShareControlService.Sorted(unordered).Entries);

        var ordered = new Allowlist { Entries = { "a", "a/c", "b" } };
        Assert.Same(ordered, ShareControlService.Sorted(ordered));
        Assert.Equal(["a", "a/c", "b"], ordered.Entries);

        var status = new ShareStatus { Opcodes = { new OpcodeCounters { Opcode = 15 }, new OpcodeCounters { Opcode = 1 }, new OpcodeCounters { Opcode = 26 } } };
        Assert.Equal([1u, 15u, 26u], ShareControlService.Sorted(status).Opcodes.Select(o => o.Opcode));
        Assert.Equal([1u, 15u, 26u], ShareControlService.Sorted(status).Opcodes.Select(o => o.Opcode));
    }
}
