// The launcher and its tests are Linux-only (posix_spawn, pidfd, /proc).
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
