using Hypervisor.Vdev.Control;

if (args.Length > 0 && args[0] == "ctl") return CtlCommand.Run(args[1..]);
Console.Error.WriteLine("vdev: the virtio-fs device is not part of this build yet; 'vdev ctl' controls running shares.");
return 70;
