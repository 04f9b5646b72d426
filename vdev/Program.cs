using Hypervisor.Vdev.Cli;
using Hypervisor.Vdev.Control;

if (args.Length > 0 && args[0] == "ctl") return CtlCommand.Run(args[1..]);
return await VdevCommand.RunAsync(args);
