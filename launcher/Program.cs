return Hypervisor.Launcher.FuseLauncher.Run(args);
