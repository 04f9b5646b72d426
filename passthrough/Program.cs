using Hypervisor.Interop;
using Hypervisor.Passthrough;
using Hypervisor.Passthrough.Cli;
using Hypervisor.Passthrough.Control;
using Hypervisor.Passthrough.Sandbox;

// A run is parsed and confined before anything else starts a thread: capabilities belong to each thread, and only the
// runtime's own threads exist yet.
if (DaemonCommand.ParseRun(args, out var exitCode) is not { } settings) return exitCode;
Confinement confinement;
try
{
    confinement = Confinement.Enter(settings);
}
catch (Exception e) when (e is ConfinementException or SeccompException or ControlSocketException)
{
    Console.Error.WriteLine($"passthrough: {e.Message}");
    return 1;
}
using (confinement)
    return await Daemon.RunAsync(settings, confinement, CancellationToken.None);
