using Hypervisor.Interop;
using System.Diagnostics;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Hypervisor.Passthrough.Control;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough.Tests.Control;

/// <summary>
/// The control socket of <see cref="ControlServer"/>: its file mode, what happens to files
/// already at the path, clean-up, and the SO_PEERCRED check of connecting processes.
/// </summary>
public sealed class ControlServerSocketTests
{
    [Fact]
    public async Task SocketFile_IsMode0600AndRemovedOnDispose()
    {
        var server = await RunningControlServer.StartAsync();
        string path = server.SocketPath;
        try
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        }
        finally
        {
            await server.Server.DisposeAsync();
        }
        Assert.False(File.Exists(path));
        Directory.Delete(server.Directory, recursive: true);
    }

    [Fact]
    public async Task StaleSocket_NobodyListening_IsReplaced()
    {
        string directory = RunningControlServer.CreateTempDirectory();
        string path = Path.Combine(directory, "control.sock");
        // A socket file whose listener is gone, as a crashed daemon leaves it (a process that
        // bound it and exited; .NET's Socket would unlink it on Dispose, Python's does not).
        using (Process bind = Process.Start("/usr/bin/python3", ["-c", "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", path]))
            await bind.WaitForExitAsync();
        Assert.True(File.Exists(path));
        Assert.NotEqual(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));

        await using ControlServer server = await ControlServer.StartAsync(path, new InMemoryShareControl());
        using GrpcChannel channel = RunningControlServer.CreateChannel(path);
        HealthCheckResponse health = await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest());
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
    }

    [Fact]
    public async Task BusySocket_IsAnErrorAndTheRunningServerKeepsIt()
    {
        await using var first = await RunningControlServer.StartAsync();
        var e = await Assert.ThrowsAsync<ControlSocketException>(() => ControlServer.StartAsync(first.SocketPath, new InMemoryShareControl()));
        Assert.Contains("in use by a running process", e.Message);
        Assert.Contains("choose another path", e.Message);
        // The first server is untouched.
        HealthCheckResponse health = await first.Health.CheckAsync(new HealthCheckRequest());
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, health.Status);
    }

    [Fact]
    public async Task RegularFileAtThePath_IsAnErrorAndIsKept()
    {
        string directory = RunningControlServer.CreateTempDirectory();
        string path = Path.Combine(directory, "control.sock");
        await File.WriteAllTextAsync(path, "precious");
        var e = await Assert.ThrowsAsync<ControlSocketException>(() => ControlServer.StartAsync(path, new InMemoryShareControl()));
        Assert.Contains("is not a socket", e.Message);
        Assert.Equal("precious", await File.ReadAllTextAsync(path));
        Directory.Delete(directory, recursive: true);
    }

    [Fact]
    public async Task UnusablePaths_AreClearErrors()
    {
        string directory = RunningControlServer.CreateTempDirectory();
        var missingDir = await Assert.ThrowsAsync<ControlSocketException>(
            () => ControlServer.StartAsync(Path.Combine(directory, "no/such/dir/c.sock"), new InMemoryShareControl()));
        Assert.Contains("does not exist", missingDir.Message);

        var tooLong = await Assert.ThrowsAsync<ControlSocketException>(
            () => ControlServer.StartAsync(Path.Combine(directory, new string('x', 120)), new InMemoryShareControl()));
        Assert.Contains("longer than 107 bytes", tooLong.Message);

        var isDirectory = await Assert.ThrowsAsync<ControlSocketException>(() => ControlServer.StartAsync(directory, new InMemoryShareControl()));
        Assert.Contains("is a directory", isDirectory.Message);
        Directory.Delete(directory, recursive: true);
    }

    private const string Http2Probe = """
        import socket, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sys.argv[1])
        except PermissionError:
            print("EACCES"); sys.exit(0)
        # HTTP/2 connection preface and an empty SETTINGS frame: a server that accepts the
        # connection answers with its own SETTINGS frame.
        # A refused peer may see the close while it is still sending: that is a refusal too.
        try:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        except (BrokenPipeError, ConnectionResetError):
            print("CLOSED"); sys.exit(0)
        s.settimeout(60)
        try:
            data = s.recv(64)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            print("TIMEOUT"); sys.exit(0)
        print("SETTINGS" if len(data) >= 9 and data[3] == 4 else "CLOSED" if not data else "OTHER")
        """;

    private static async Task<string> ProbeAsync(string socketPath, bool asNobody)
    {
        var psi = new ProcessStartInfo(asNobody ? "/usr/bin/setpriv" : "/usr/bin/python3")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        if (asNobody)
        {
            foreach (string arg in new[] { "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3" })
                psi.ArgumentList.Add(arg);
        }
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(Http2Probe);
        psi.ArgumentList.Add(socketPath);
        using Process process = Process.Start(psi)!;
        string output = await process.StandardOutput.ReadToEndAsync();
        string error = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, $"probe failed: {error}");
        return output.Trim();
    }

    [Fact]
    [Trait("Category", "Root")]
    public async Task PeerWithAnotherUid_IsRefused_RootIsAccepted()
    {
        Assert.True(Environment.IsPrivilegedProcess, "This test switches to uid 65534 (nobody) and must run as root.");
        var log = new RecordingLoggerProvider();
        using var loggerFactory = LoggerFactory.Create(b => b.AddProvider(log).SetMinimumLevel(LogLevel.Warning));
        await using var server = await RunningControlServer.StartAsync(loggerFactory: loggerFactory);
        File.SetUnixFileMode(server.Directory, (UnixFileMode)0b111_101_101);

        // The 0600 mode alone keeps nobody out.
        Assert.Equal("EACCES", await ProbeAsync(server.SocketPath, asNobody: true));

        // With the mode opened up (a misconfiguration), SO_PEERCRED still refuses the connection
        // before any HTTP/2 byte is sent, while root gets the server's SETTINGS.
        File.SetUnixFileMode(server.SocketPath, (UnixFileMode)0b110_110_110);
        Assert.Equal("CLOSED", await ProbeAsync(server.SocketPath, asNobody: true));
        Assert.Equal("SETTINGS", await ProbeAsync(server.SocketPath, asNobody: false));

        // The refusal is logged once, as a warning naming the peer's uid.
        RecordingLoggerProvider.Entry refusal = Assert.Single(log.Entries, e => e.Message.Contains("refused"));
        Assert.Equal(LogLevel.Warning, refusal.Level);
        Assert.Contains("uid 65534", refusal.Message);
    }
}
