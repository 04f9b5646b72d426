// The tests drive Linux interfaces (/dev/fuse, /proc, POSIX modes); they run nowhere else.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
