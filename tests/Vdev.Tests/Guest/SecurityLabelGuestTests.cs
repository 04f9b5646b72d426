using Xunit.Abstractions;

namespace Hypervisor.Vdev.Tests.Guest;

/// <summary>
/// <c>--security-label</c> from a real guest (tests/guest/scenarios/security-label.sh): the guest kernel runs SELinux
/// without a policy, which still gives each new file a context (the initial SID's), so its CREATE, MKDIR, SYMLINK and
/// MKNOD requests carry one. On a share whose daemon may set security.* xattrs on the host (<c>--modcaps +sys_admin</c>,
/// which a host without an LSM that owns security.selinux requires) every new entry has it on the host; on a share whose
/// xattr map refuses security.* names, every labelled creation fails in the guest (EPERM) and nothing is left on the
/// host. Needs root, QEMU and the guest kernel.
/// QEMU's C virtiofsd (7.2) cannot serve as the reference here: with <c>-o security_label</c> it answers every labelled
/// CREATE, MKDIR and SYMLINK of this guest with ERANGE and every MKNOD with EINVAL, labelled share or not.
/// </summary>
[Trait("Category", "Guest")]
[Collection(GuestVm.Collection)]
public sealed class SecurityLabelGuestTests(ITestOutputHelper output)
{
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Refuses security.* names but security.capability (kept as QEMU's virtiofsd requires of a map), so the label's
    /// name security.selinux is refused.
    /// </summary>
    private const string RefuseSecurity = ":ok:all:security.capability:security.capability: :bad:all:security.:security.: :ok:all:::";

    [Fact]
    public void SecurityLabel_Vdev_NewEntriesCarryTheGuestsContext_OrAreNotCreated() =>
        Run(GuestBackend.Vdev(extraArgs: ["--security-label", "--modcaps", "+sys_admin"]),
            GuestBackend.Vdev(extraArgs: ["--security-label", "--xattrmap", RefuseSecurity]));

    private void Run(GuestBackend labelling, GuestBackend refusing)
    {
        var labelled = Directory.CreateTempSubdirectory("hvg-label-").FullName;
        var refused = Directory.CreateTempSubdirectory("hvg-nolabel-").FullName;
        try
        {
            var scenario = GuestVm.LoadScenario("security-label.sh");
            var result = GuestVm.Run(scenario, [new GuestShare("labelled", labelled, labelling), new GuestShare("refused", refused, refusing)],
                new GuestOptions { Timeout = TimeSpan.FromMinutes(4), KernelArguments = "security=selinux selinux=1" });
            output.WriteLine(string.Join("\n", result.Values("op")));
            GuestScenarios.AssertAllChecksPassed(result, scenario);
            Assert.Equal(
            [
                "labelled.create x ok", "labelled.mkdir x ok", "labelled.symlink x ok", "labelled.mkfifo x ok", "labelled.list dir,fifo,file,link,",
                "refused.create x EPERM", "refused.mkdir x EPERM", "refused.symlink x EPERM", "refused.mkfifo x EPERM", "refused.list ",
            ], result.Values("op"));

            // Each new entry (the link itself, not its target) has the context the guest's SELinux chose: with no policy
            // loaded, the name of the initial SID of an unlabelled parent.
            var contexts = new[] { "file", "dir", "link", "fifo" }.Select(name => Label(Path.Combine(labelled, name))).ToList();
            output.WriteLine("host labels: " + string.Join(" | ", contexts));
            Assert.All(contexts, c => Assert.Equal("unlabeled", c));
            Assert.Empty(Directory.EnumerateFileSystemEntries(refused));
        }
        finally
        {
            foreach (var dir in new[] { labelled, refused })
            {
                foreach (var pid in HostProcesses.FindPassthroughDaemons(dir)) HostProcesses.KillAndWait(pid, TimeSpan.FromSeconds(5));
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    /// <summary>security.selinux of <paramref name="path"/> itself (not following a symlink), as the host stores it.</summary>
    private static string Label(string path)
    {
        var outcome = HostProcesses.Run("getfattr", ["--absolute-names", "-h", "--only-values", "-n", "security.selinux", path], ToolTimeout);
        return outcome.ExitCode == 0 ? outcome.Stdout.TrimEnd('\0', '\n') : "";
    }
}
