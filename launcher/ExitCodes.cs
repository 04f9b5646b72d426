namespace Hypervisor.Launcher;

/// <summary>fuse_launcher's exit codes; the vdev tells a bad share configuration from a daemon failure by them.</summary>
public static class ExitCodes
{
    /// <summary>The daemon serves; its pid and control endpoint are on stdout.</summary>
    public const int Ready = 0;

    /// <summary>The daemon could not be started, or exited or failed before it reported ready.</summary>
    public const int DaemonFailed = 1;

    /// <summary>A setting on the launcher's command line is wrong; nothing was started.</summary>
    public const int BadSettings = 2;

    /// <summary>The daemon did not report ready within <c>--timeout</c>; it was stopped.</summary>
    public const int Timeout = 3;
}
