using Hypervisor.Passthrough;
using Hypervisor.Passthrough.Cli;

return await DaemonCommand.Create(Daemon.RunAsync).Parse(args).InvokeAsync();
