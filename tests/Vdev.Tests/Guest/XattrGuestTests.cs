using Xunit.Abstractions;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>
/// <c>--xattrmap</c> and <c>--posix-acl</c> seen from a real guest (tests/guest/scenarios/xattrs.sh), run against the
/// vdev and against QEMU's C virtiofsd with the same options, so the scenario's expectations are known right: the
/// names the guest uses become the mapped names on the host (getfattr) and come back mapped in listings, names a rule
/// hides stay hidden and refused; an ACL set in the guest is stored on the host (getfacl), inherited by new files
/// with the umask applied only where there is no default ACL, and enforced against other uids.
/// Needs root, QEMU and the guest kernel.
/// </summary>
[Trait("Category", "Guest")]
[Collection(GuestVm.Collection)]
public sealed class XattrGuestTests(ITestOutputHelper output)
{
    /// <summary>
    /// Prefix trusted.* with user.virtiofs., pass user.* and security.capability unchanged, refuse and hide everything
    /// else. (QEMU's virtiofsd maps security.capability through the map at start and exits when the map refuses it.)
    /// </summary>
    public const string Map = ":prefix:all:trusted.:user.virtiofs.: :ok:all:user.:user.: :ok:all:security.capability:security.capability: :bad:all:::";

    private static readonly TimeSpan ToolTimeout = TimeSpan.FromSeconds(30);

    private static readonly string[] Expected =
    [
        "set-trusted ok", "set-user ok", "set-unmapped EPERM", "list-f trusted.t,user.color", "get-trusted tv", "get-user blue",
        "list-pre trusted.pre,user.plain", "get-pre p", "get-hidden ENODATA", "get-unmapped ENODATA", "remove-user ok",
        "list-pre-after trusted.pre", "set-g ok",
        "runas 1001", "ls-share /mnt/a", "setacl-d-access ok", "setacl-d-default ok", "getacl-d-default u::7,u:1001:6,g::5,m::7,o::0",
        "mode-inherited 660", "getacl-inherited u::6,u:1001:6,g::5,m::6,o::0",
        "mode-subdir 770", "getacl-subdir-default u::7,u:1001:6,g::5,m::7,o::0",
        "mode-masked 600", "getacl-masked ENODATA",
        "user-create ok", "mode-byuser 660 1001",
        "setacl-secret ok", "mode-secret 640", "read-1001 secret", "read-1002 denied", "write-1001 denied",
        "remove-acl ok", "read-1001-after-remove denied",
    ];

    [Fact]
    public void Xattrs_Vdev_MapNamesBothWays_AclsStoredInheritedEnforced() =>
        Run(GuestBackend.Vdev(extraArgs: ["--xattrmap", Map]), GuestBackend.Vdev(extraArgs: ["--posix-acl"]));

    [Fact]
    public void Xattrs_Virtiofsd_Reference_MapNamesBothWays_AclsStoredInheritedEnforced() =>
        Run(GuestBackend.Virtiofsd(extraArgs: ["-o", "xattrmap=" + Map]), GuestBackend.Virtiofsd(extraArgs: ["-o", "xattr", "-o", "posix_acl"]));

    private void Run(GuestBackend mapped, GuestBackend acls)
    {
        var x = Directory.CreateTempSubdirectory("hvg-xattr-").FullName;
        var a = Directory.CreateTempSubdirectory("hvg-acl-").FullName;
        try
        {
            File.SetUnixFileMode(x, (UnixFileMode)0x1ED); // 0755
            File.SetUnixFileMode(a, (UnixFileMode)0x1ED);
            var pre = Path.Combine(x, "pre");
            File.WriteAllText(pre, "pre\n");
            Tool("setfattr", "-n", "user.virtiofs.trusted.pre", "-v", "p", pre);
            Tool("setfattr", "-n", "user.plain", "-v", "u", pre);
            Tool("setfattr", "-n", "trusted.host", "-v", "h", pre);

            var scenario = GuestVm.LoadScenario("xattrs.sh");
            var result = GuestVm.Run(scenario, [new GuestShare("xattrs", x, mapped), new GuestShare("acls", a, acls)],
                new GuestOptions { Timeout = TimeSpan.FromMinutes(4) });
            output.WriteLine(string.Join("\n", result.Values("op")));
            GuestScenarios.AssertAllChecksPassed(result, scenario);
            Assert.Equal(Expected, result.Values("op"));

            // What the host stores: the mapped names only, nothing for refused names.
            Assert.Equal("user.color=\"blue\"\nuser.virtiofs.trusted.t=\"tv\"", Attributes(Path.Combine(x, "f")));
            Assert.Equal("trusted.host=\"h\"\nuser.virtiofs.trusted.pre=\"p\"", Attributes(pre));
            Assert.Equal("user.virtiofs.trusted.kept=\"k\"", Attributes(Path.Combine(x, "g")));

            // The ACLs the guest set and the ones new files inherited, as the host's own tools read them.
            Assert.Equal("user::rwx,user:1001:rw-,group::r-x,mask::rwx,other::---", Acl(Path.Combine(a, "d"), defaults: true));
            Assert.Equal("user::rw-,user:1001:rw-,group::r-x,mask::rw-,other::---", Acl(Path.Combine(a, "d", "inherited"), defaults: false));
            Assert.Equal("user::rw-,user:1001:rw-,group::r-x,mask::rw-,other::---", Acl(Path.Combine(a, "d", "byuser"), defaults: false));
            Assert.Equal("user::rw-,group::---,other::---", Acl(Path.Combine(a, "plain", "masked"), defaults: false));
            Assert.Equal("1001", Tool("stat", "-c", "%u", Path.Combine(a, "d", "byuser")).Trim());
        }
        finally
        {
            foreach (var dir in new[] { x, a })
            {
                foreach (var pid in HostProcesses.FindPassthroughDaemons(dir)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    private static string Tool(string exe, params string[] args)
    {
        var outcome = HostProcesses.Run(exe, args, ToolTimeout);
        if (outcome.ExitCode != 0) throw new InvalidOperationException($"{exe} {string.Join(' ', args)} failed: {outcome}");
        return outcome.Stdout;
    }

    /// <summary>Every xattr of <paramref name="path"/> but the ACLs, "name=\"value\"" sorted, one a line (getfattr -d -m -).</summary>
    private static string Attributes(string path)
    {
        var lines = Tool("getfattr", "--absolute-names", "-d", "-m", "-", path).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Where(l => !l.StartsWith('#') && !l.StartsWith("system.posix_acl", StringComparison.Ordinal)).Order(StringComparer.Ordinal);
        return string.Join("\n", lines);
    }

    /// <summary>The access (or default) ACL of <paramref name="path"/> as getfacl prints it, entries comma-separated.</summary>
    private static string Acl(string path, bool defaults)
    {
        var args = new List<string> { "--absolute-names", "--omit-header", "--numeric", "--no-effective" };
        if (defaults) args.Add("--default");
        args.Add(path);
        return string.Join(",", Tool("getfacl", [.. args]).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.StartsWith("default:", StringComparison.Ordinal) ? l["default:".Length..] : l));
    }
}
