namespace Hypervisor.Launcher.Tests.Support;

/// <summary>
/// A temporary directory with a share directory inside, and small shell programs standing in for the daemon
/// where a test needs a daemon that misbehaves in a chosen way (never ready, dies, ignores SIGTERM).
/// </summary>
internal sealed class TempShare : IDisposable
{
    public TempShare()
    {
        Root = Directory.CreateTempSubdirectory("launcher-test-").FullName;
        Share = Path.Combine(Root, "share");
        Directory.CreateDirectory(Share);
    }

    /// <summary>The temporary directory (short: /tmp/launcher-test-XXXXXX).</summary>
    public string Root { get; }

    /// <summary>The directory to share.</summary>
    public string Share { get; }

    /// <summary>Created by every script daemon as its first action: proof that something was started.</summary>
    public string StartedMarker => Path.Combine(Root, "started");

    /// <summary>The arguments a script daemon received, one per line.</summary>
    public string ArgsFile => Path.Combine(Root, "args");

    /// <summary>The script daemon writes its own pid here.</summary>
    public string PidFile => Path.Combine(Root, "pid");

    /// <summary>
    /// Writes an executable bash script that records that it started, its pid and its arguments, sets
    /// <c>$ready</c> (the --ready-fd number) and <c>$control</c> (the --control-socket or "-"), then runs
    /// <paramref name="body"/>.
    /// </summary>
    public string Script(string name, string body)
    {
        var path = Path.Combine(Root, name);
        File.WriteAllText(path, $$"""
            #!/bin/bash
            touch '{{StartedMarker}}'
            echo $$ > '{{PidFile}}'
            printf '%s\n' "$@" > '{{ArgsFile}}'
            ready=; control=-
            while [ $# -gt 0 ]; do
              case "$1" in
                --ready-fd) ready=$2; shift;;
                --control-socket) control=$2; shift;;
              esac
              shift
            done
            {{body}}
            """.Replace("\r", ""));
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    /// <summary>A daemon that reports ready properly, closes the ready pipe and then only sleeps (as the same pid).</summary>
    public string ReadyScript() => Script("ready.sh", """
        echo "script daemon starting" >&2
        echo "ready pid=$$ control=$control" >&$ready
        exec {ready}>&-
        exec sleep 60
        """);

    /// <summary>The pid the script daemon recorded.</summary>
    public int ScriptPid() => int.Parse(File.ReadAllText(PidFile).Trim());

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
